"""`zoo list`, `zoo info`, `zoo weights`: output and one-line user errors."""

import subprocess
import sys

import pytest

from recipes.cli import main


def test_list_shows_every_backbone_with_columns(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "input", "params", "GMACs", "top-1", "weights"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert len(rows) >= 30
    assert "inception_v3" in rows
    assert all(row[-1] in ("offline", "download", "none") for row in rows.values())


def test_list_weights_column_says_where_weights_come_from(capsys):
    # The test extra installs the EfficientNet-Lite0..2 checkpoint packages: offline. The
    # tests' caches are empty and offline, so Keras' files would be downloaded. Lite3 and
    # lite4 have no ImageNet weights, and so no top-1 to show.
    assert main(["list", "efficientnet_lite*"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert rows[name][-1] == "offline" and rows[name][-2] != "-"
    for name in ("efficientnet_lite3", "efficientnet_lite4"):
        assert rows[name][-2:] == ["-", "none"]
    assert main(["list", "resnet50"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "download"


def test_version_and_help_are_plain_text(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip().startswith("zoo ")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":class:" not in out
    assert "ZOO_OFFLINE" in out


def test_list_pattern_filters(capsys):
    assert main(["list", "resnet*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names and all(name.startswith("resnet") for name in names)


def test_info_inception_v3(capsys):
    assert main(["info", "inception_v3"]) == 0
    out = capsys.readouterr().out
    assert "299x299" in out
    assert "[-1, 1]" in out
    assert "2048 channels" in out
    assert "21,802,784 without top" in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["info", "inceptoin_v3"], "Did you mean inception_v3"),
        (["list", "no_such_thing*"], "No backbone matches"),
        (["weights", "add", "/nonexistent.h5", "--backbone", "resnet50"], "No such weights file"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(argv, expected):
    result = subprocess.run(
        [sys.executable, "-m", "recipes.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_weights_path_points_into_keras_cache(capsys, isolated_caches):
    assert main(["weights", "path", "inception_v3"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(str(isolated_caches / "keras" / "models"))
    assert out.endswith("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")


@pytest.mark.parametrize("bug", [ValueError("index out of range"), KeyError("stage"), OSError(5)])
def test_a_bug_keeps_its_traceback_and_is_not_a_user_error(monkeypatch, bug):
    """Only a zoo.ZooError is a user's mistake (one line, exit 2); a builtin exception
    raised by a bug propagates (Python prints the traceback and exits 1)."""
    import zoo

    def broken(pattern=None):
        raise bug

    monkeypatch.setattr(zoo, "list_backbones", broken)
    with pytest.raises(type(bug)):
        main(["list"])


def test_a_bug_in_a_subprocess_exits_1_with_a_traceback():
    code = (
        "import zoo, sys; from recipes.cli import main\n"
        "zoo.list_backbones = lambda pattern=None: [][1]\n"
        "sys.exit(main(['list']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "IndexError" in result.stderr
    assert "zoo: error:" not in result.stderr
