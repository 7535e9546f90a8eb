"""The bad-input catalogue: every error a user can cause is an `actpatch.Error` of the
right kind with the command line's message; a Rust panic is `InternalError`."""

from __future__ import annotations

import pytest

import actpatch
from actpatch import _actpatch
from conftest import EXPERIMENTS, FIXTURES, run_cli

CLEAN, CORRUPTED, ANSWERS = "The Colosseum is in", "The Eiffel Tower is in", (" Rome", " Paris")


def test_the_exception_classes():
    for cls in [actpatch.BadInput, actpatch.ModelError, actpatch.RunError, actpatch.InternalError]:
        assert issubclass(cls, actpatch.Error)
    assert issubclass(actpatch.Error, Exception)


def cli_message(cli, *args) -> str:
    done = run_cli(cli, *args)
    assert done.returncode == 2, done.stderr
    # Progress lines come first; the message is everything from `error: ` on.
    message = done.stderr[done.stderr.index("error: ") :]
    return message.removeprefix("error: ").rstrip("\n")


@pytest.mark.parametrize(
    "text, error",
    [
        ("[experiment\nname = 'x'", actpatch.BadInput),  # TOML syntax
        ("[experiment]\nname = 'x'\nunknown_key = 1\n", actpatch.BadInput),
        (
            "[experiment]\nname = 'x'\n[model]\npath = 'nowhere'\n[[pairs]]\nname='a'\n"
            "concept='c'\nclean='a b'\ncorrupted='a c'\ncorrect=' x'\nincorrect=' y'\n",
            actpatch.ModelError,
        ),
    ],
)
def test_bad_experiment_files_raise_the_command_lines_message(cli, tmp_path, text, error):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(error) as raised:
        actpatch.run(path, out=tmp_path / "out", progress=False)
    assert str(raised.value) == cli_message(cli, "run", str(path), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_missing_experiment_file(tmp_path):
    with pytest.raises(actpatch.BadInput, match="cannot read experiment file"):
        actpatch.run(tmp_path / "missing.toml", progress=False)


def test_model_errors(tmp_path):
    with pytest.raises(actpatch.BadInput, match="no model file or folder"):
        actpatch.load_model("./no/such/model.gguf")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(actpatch.ModelError):
        actpatch.load_model(str(tmp_path))
    with pytest.raises(actpatch.BadInput, match="device"):
        actpatch.load_model(str(FIXTURES / "tiny-gpt2"), device="tpu")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "resid_sideways"}, "unknown patch kind"),
        ({"kind": "path"}, "needs receivers"),
        ({"metric": "accuracy"}, "unknown metric"),
        ({"direction": "both"}, "call patch once for each"),
        ({"align": "middle"}, "unknown align"),
        ({"positions": [99]}, "position"),
    ],
)
def test_bad_patch_requests(gpt2, kwargs, match):
    with pytest.raises(actpatch.BadInput, match=match):
        gpt2.patch(CLEAN, CORRUPTED, ANSWERS, **kwargs)


def test_bad_prompts_and_answers(gpt2):
    with pytest.raises(actpatch.BadInput, match="align="):
        gpt2.patch("The Colosseum", CORRUPTED, ANSWERS)
    with pytest.raises(actpatch.BadInput, match="token"):
        gpt2.patch(CLEAN, CORRUPTED, (" Rome and", " Paris"))
    with pytest.raises(actpatch.BadInput, match="layer 9"):
        gpt2.run_with_cache(CLEAN, names=["blocks.9.hook_resid_pre"])
    with pytest.raises(actpatch.BadInput):
        gpt2.run_with_cache(CLEAN, names=["blocks.0.hook_nothing"])
    with pytest.raises(actpatch.BadInput):
        gpt2.to_single_token(" Rome and Paris")


def test_bad_run_folders(tmp_path):
    with pytest.raises(actpatch.BadInput, match="not a run folder"):
        actpatch.read_run(tmp_path)
    with pytest.raises(actpatch.BadInput):
        actpatch.resume(tmp_path, progress=False)
    with pytest.raises(actpatch.BadInput):
        actpatch.compare(tmp_path, tmp_path)


def test_a_panic_is_an_internal_error():
    with pytest.raises(actpatch.InternalError, match="panicked: a test panic"):
        _actpatch._panic_for_tests()
