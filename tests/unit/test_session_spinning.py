"""Whether ONNX Runtime's intra-op threads spin: only where each has a whole CPU (maas_runtime.session)."""

from __future__ import annotations

import pytest

from maas_runtime import session


@pytest.mark.parametrize(
    ("env", "threads", "spins"),
    [
        ({}, 2, True),  # off Lambda: the process's cores are its own
        ({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}, 1, True),  # one vCPU for one thread
        ({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}, 2, False),  # the default size: one vCPU for two threads
        ({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3537"}, 2, False),
        ({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3538"}, 2, True),
        ({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}, 1, False),
        ({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "lots"}, 1, False),
        ({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "MAAS_ORT_SPINNING": "1"}, 2, True),
        ({"MAAS_ORT_SPINNING": "0"}, 2, False),
    ],
)
def test_threads_spin_only_where_each_has_a_whole_cpu(env, threads, spins):
    assert session.spinning(threads, env) is spins


def test_the_session_options_carry_the_choice(monkeypatch):
    monkeypatch.setenv("MAAS_INTRA_OP_THREADS", "2")
    monkeypatch.delenv("MAAS_ORT_SPINNING", raising=False)
    for memory, expected in (("1769", "0"), ("3538", "1")):
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory)
        options = session.session_options()
        assert options.intra_op_num_threads == 2
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected
        if expected == "1":  # spinning within a run only, and briefly
            assert options.get_session_config_entry("session.force_spinning_stop") == "1"
            assert options.get_session_config_entry("session.intra_op.spin_duration_us") == str(session.SPIN_DURATION_US)
