"""``zoo run``'s exit code when the export fails verification."""

import json
from pathlib import Path

from export_testlib import colour_squares, tiny_recipe

from recipes import export as export_lib
from recipes import runner
from recipes import verify as verify_lib
from recipes.cli import main
from recipes.config import load_recipe
from recipes.verify import VerifyResult

FAILURE = "frozen variable backbone/stem_conv/kernel changed since the pretrained source"


def test_failed_verification_exits_1(tmp_path, monkeypatch, capsys):
    """The real command, run to the end; only the export's verdict is forced to fail."""
    recipe = tmp_path / "one.toml"
    recipe.write_text(
        tiny_recipe(colour_squares(tmp_path / "photos", per_class=8, size=16), top_epochs=None)
    )
    failed = VerifyResult(tmp_path / "x", passed=False, failures=[FAILURE])
    seen = {}

    def refuse(model, export_dir, **kwargs):
        seen.update(kwargs)
        raise export_lib.ExportError("The export failed verification", failed)

    monkeypatch.setattr(export_lib, "export_saved_model", refuse)
    run_dir = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run_dir)]) == 1
    assert f"verification FAILED, no export kept: {FAILURE}" in capsys.readouterr().out
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verify"]["passed"] is False and report["verify"]["failures"] == [FAILURE]
    assert not (run_dir / "export").exists()
    # weights = "none": nothing pretrained, so the runner asks for no registry proof.
    assert seen["require_proof"] is False and "tolerance" not in seen


def test_recipe_tolerance_and_registry_proof_reach_the_export(tmp_path, monkeypatch):
    """One verification per run: the export's own, with the recipe's tolerance."""
    text = tiny_recipe(tmp_path, top_epochs=None).replace('"none"', '"imagenet"')
    recipe_file = tmp_path / "one.toml"
    recipe_file.write_text(text + "[verify]\ntolerance = 0.001\n")
    seen = {}
    passed = VerifyResult(tmp_path / "export", passed=True)

    def export(model, export_dir, **kwargs):
        seen.update(kwargs)
        return export_lib.ExportResult(Path(export_dir), passed)

    monkeypatch.setattr(export_lib, "export_saved_model", export)
    monkeypatch.setattr(verify_lib, "verify_export", None)  # a second verification would fail
    path, verify = runner._export_and_verify(
        load_recipe(recipe_file),
        model=None,
        run_dir=tmp_path,
        source_manifest={},
        result=type("R", (), {"frozen_in_all_stages": set()})(),
        timings={},
        log=lambda message: None,
    )
    assert path == tmp_path / "export" and verify["passed"] is True
    assert seen["tolerance"] == 0.001 and seen["require_proof"] is True
