"""One warm Lambda instance in a process of its own, seeing only what Lambda would put on its path.

Run as ``python -I -S lambda_worker.py --task-root DIR --layer DIR ... --handler app.lambda_handler``:
``-I -S`` keeps the user's site-packages, PYTHONPATH and the current folder out, so the handler
imports from the function asset (Lambda's /var/task), the layers (/opt/python) and the standard
library only, plus any ``--extra`` folder standing in for what the Lambda runtime itself provides
(boto3). Standard library only here: nothing else is importable before the path is set.

Protocol: one JSON object per line on stdin, ``{"event": ..., "context": {...}}`` (the context as
LambdaContext's keyword arguments); one per line back on the original stdout, ``{"result": ...}``
or ``{"error": "..."}``. Anything the handler prints (Powertools logs) goes to stderr, so it
cannot corrupt the protocol.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
import uuid


ACCOUNT_ID = "000000000000"
"""The account id every local stand-in reports (no AWS account is involved)."""


class LambdaContext:
    """What the Lambda runtime passes as `context`: the fields Powertools' Logger and Metrics read.

    The one stand-in for it: this worker makes one per invocation, and `maas serve` and the tests
    import it from here (this module imports the standard library only).
    """

    def __init__(self, function_name: str = "local", memory_mb: int = 1024, timeout_s: float = 30,
                 aws_request_id: str | None = None):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(memory_mb)
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{function_name}"
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + float(timeout_s)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task-root", required=True)
    parser.add_argument("--layer", action="append", default=[], help="a layer's folder (its python/ is used)")
    parser.add_argument("--extra", action="append", default=[], help="what the Lambda runtime provides")
    parser.add_argument("--handler", default="app.lambda_handler")
    args = parser.parse_args(argv)

    stdlib = [p for p in sys.path if p and not p.endswith("site-packages")]
    layers = [os.path.join(layer, "python") for layer in args.layer]
    sys.path[:] = [args.task_root, *layers, *stdlib, *args.extra]
    os.environ.setdefault("LAMBDA_TASK_ROOT", args.task_root)

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the handler's prints and logs go to stderr
    sys.stdout = sys.stderr

    module_name, _, function_name = args.handler.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        protocol.write(json.dumps({"ready": True, "sys_path": sys.path}) + "\n")
    except BaseException:
        protocol.write(json.dumps({"ready": False, "error": traceback.format_exc()}) + "\n")
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if "modules" in request:  # where named modules were imported from (tests check the isolation)
            found = {name: getattr(sys.modules.get(name), "__file__", None) for name in request["modules"]}
            protocol.write(json.dumps({"result": found}) + "\n")
            continue
        try:
            result = handler(request["event"], LambdaContext(**(request.get("context") or {})))
            protocol.write(json.dumps({"result": result}) + "\n")
        except BaseException:
            protocol.write(json.dumps({"error": traceback.format_exc()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
