"""Heavy models on NVIDIA Triton: what their servers are given, and a Triton on this machine.

- `graph`: the served graph (an embedding's pooling appended, so answers fit InvokeEndpoint's 6 MB)
  and its KServe v2 metadata;
- `config`: config.pbtxt, built and validated with Triton's own ModelConfig protobuf;
- `repository`: the SageMaker archive (model.tar.gz), the proxy's copy of the artifact, local
  model repositories;
- `server`, `standin`, `front`, `endpoint`, `client`: `maas serve`'s endpoint: the tritonserver of
  NVIDIA's pip wheel (or a Python stand-in where it cannot run) behind SageMaker's contract.

The request and answer codec, and the engine that runs a task's graph remotely, are the runtime
library's (maas_runtime.kserve): the proxy Lambda uses them.
"""
