"""Content-keyed cache folders (.cache/layers, .cache/infra, .cache/triton) stay bounded."""

import os

from maas.paths import materialize


def _fill(work):
    (work / "content").write_text("x")


def test_a_family_keeps_its_most_recently_used_folders(tmp_path):
    made = [materialize(tmp_path / f"runtime-host-cp311-{key:016x}", _fill) for key in range(5)]
    for age, path in enumerate(reversed(made)):  # older keys were used longer ago
        os.utime(path, (1_000_000 - age, 1_000_000 - age))

    again = materialize(made[0], _fill, keep=3)  # a cache hit on the oldest marks it used

    left = sorted(p.name for p in tmp_path.iterdir())
    assert again == made[0] and (again / "content").read_text() == "x"
    assert left == sorted([made[0].name, made[4].name, made[3].name])


def test_other_families_and_plain_folders_are_left_alone(tmp_path):
    for key in range(4):
        materialize(tmp_path / f"minilm-gpu-{key:020x}", _fill, keep=1)
    materialize(tmp_path / f"minilm-{0:020x}", _fill, keep=1)
    materialize(tmp_path / "lambda-runtime-provided", _fill)
    materialize(tmp_path / f"minilm-{1:020x}", _fill, keep=1)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"minilm-gpu-{3:020x}", f"minilm-{1:020x}", "lambda-runtime-provided"])


def test_each_new_key_prunes_the_least_recently_used(tmp_path):
    made = []
    for key in range(5):
        made.append(materialize(tmp_path / f"digits-{key:020x}", _fill, keep=2))
        os.utime(made[-1], (1_000_000 + key, 1_000_000 + key))
    assert sorted(p.name for p in tmp_path.iterdir()) == [made[3].name, made[4].name]
