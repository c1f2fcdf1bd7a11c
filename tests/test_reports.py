"""Reports for pipelines and people (issue #12): HTML (rendered in headless Chromium), JUnit, SARIF, baselines,
GitHub annotations, JSON additions and schemas, --input from a report, the terminal view, progress, the
composite Action and the README snippets."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import normaudit
from breakers import gguf_edit_norm, gguf_eps, scale_channels
from normaudit.cli import app

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
runner = CliRunner()
BROKEN_NORM = "blk.1.attn_norm.weight"


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """One real failing compare with activations (a norm of qwen3-f32.gguf corrupted) rendered to every output."""
    real = ROOT / "testmodels/real"
    d = tmp_path_factory.mktemp("failing")
    bad = gguf_edit_norm(real / "gguf/qwen3-f32.gguf", d / "bad.gguf", {BROKEN_NORM}, scale_channels([3, 7, 40], 4.0))
    args = ["compare", str(real / "hf/qwen3"), str(bad), "--activations", "--json", str(d / "r.json"),
            "--html", str(d / "r.html"), "--junit", str(d / "r.xml"), "--sarif", str(d / "r.sarif")]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    return {"dir": d, "bad": bad, "res": res, "doc": json.loads((d / "r.json").read_text()), "args": args}


# -- HTML ------------------------------------------------------------------------------------------------------

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium_args(tmp_path: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}"]


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_html_of_a_failing_compare_renders_in_headless_chromium(failing, tmp_path):
    html = failing["dir"] / "r.html"
    proc = subprocess.run(_chromium_args(tmp_path) + ["--dump-dom", html.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # the verdict first: the header comes before every section
    assert re.search(r'id="verdict"[^>]*>FAIL<', dom) and dom.index('id="verdict"') < dom.index('id="findings"')
    verdict = failing["doc"]["activations"]["verdict"]  # the header says what the terminal's verdict line says
    assert "first at model.layers.1.input_layernorm" in verdict and f"activations: {verdict}" in dom
    assert re.search(r'id="first-divergence".*?model\.layers\.1\.input_layernorm', dom, re.S)
    # the drift plot: one marker per point, the first divergence marked, points beyond the threshold ringed
    plot = re.search(r'<svg[^>]*data-plot="rel_l2".*?</svg>', dom, re.S).group(0)
    n_points = len(failing["doc"]["activations"]["points"])
    assert plot.count("<circle") + plot.count("<rect") + plot.count("<path d=\"M") >= n_points
    assert 'class="mark-label"' in plot and "first divergence: model.layers.1.input_layernorm" in plot
    assert plot.count('class="anomaly"') >= 1 and "threshold 0.01" in plot
    assert "weight_mismatch" in dom and "hint: corrupted or wrongly mapped tensor" in dom
    assert 'id="pairs-table"' in dom and "blk.1.attn_norm" in dom and "sha256" in dom
    shot = tmp_path / "report.png"
    proc = subprocess.run(_chromium_args(tmp_path) + ["--window-size=1280,1600", f"--screenshot={shot}", html.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    if os.environ.get("NORMAUDIT_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["NORMAUDIT_KEEP_SCREENSHOT"])


def test_html_is_self_contained_and_escaped(failing, tmp_path):
    text = (failing["dir"] / "r.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    # nothing fetched: no external scripts, styles, images or fonts (the SVG namespace is an identifier)
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', text) and "<link" not in text and "@import" not in text
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) <= {"http://www.w3.org/2000/svg"}
    assert text.count("<svg") >= 3  # rel L2, cosine, weights
    # markup from a model is text: a hostile layer id is escaped
    from normaudit.report import html

    doc = dict(failing["doc"])
    doc["findings"] = [dict(doc["findings"][0], a="<script>alert(1)</script>")]
    out = html.render(doc)
    assert "<script>alert(1)</script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_html_inspect(tm, tmp_path):
    res = runner.invoke(app, ["inspect", str(tm / "qwen3/qwen3-q8_0.gguf"), "--html", str(tmp_path / "i.html"),
                              "--quiet"])
    assert res.exit_code == 0 and res.output.strip() == "9 norm layers: 9 rms_norm"
    text = (tmp_path / "i.html").read_text()
    assert "blk.1.attn_q_norm" in text and 'data-plot="eps"' in text and 'data-plot="weight_stats"' in text
    assert "9 norm layers: 9 rms_norm" in text


# -- JUnit -----------------------------------------------------------------------------------------------------

def test_junit_one_case_per_check_and_pair_failures_for_failing_findings(failing):
    root = ET.parse(failing["dir"] / "r.xml").getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    pairs = len(failing["doc"]["pairs"])
    points = len(failing["doc"]["activations"]["points"])
    assert pairs == 9 and points == 12
    pair_checks = ["norm_type_mismatch", "eps_mismatch", "eps_underflow", "weight_at_init", "convention_mismatch",
                   "weight_mismatch", "dtype_risk"]
    for name in pair_checks:
        assert len(suites[f"normaudit.{name}"].findall("testcase")) == pairs
    assert len(suites["normaudit.activation_drift"].findall("testcase")) == points
    # 7 pair checks x 9 pairs, fold (no folds), 6 model checks (architecture, eps_unknown, the 4 around the model),
    # 2 unmatched checks, 1 activation check, 12 points
    assert root.get("tests") == str(7 * 9 + 1 + 6 + 2 + 12) == "84"
    # the weight finding, and the two anomalies: the norm adds error, its F32 weight is not its source's
    assert root.get("failures") == "3" and root.get("errors") == "0"
    assert sum(int(s.get("tests")) for s in suites.values()) == 84
    (failed,) = [c for c in suites["normaudit.weight_mismatch"] if c.find("failure") is not None]
    assert failed.get("name") == "model.layers.1.input_layernorm -> blk.1.attn_norm"
    assert failed.get("classname") == "normaudit.weight_mismatch" and failed.get("file") == str(failing["bad"])
    assert "weight differs" in failed.find("failure").get("message")
    drift, weight = [c for c in suites["normaudit.activation_drift"] if c.find("failure") is not None]
    assert drift.get("name").startswith("model.layers.1.input_layernorm")
    assert weight.get("name") == "block.1 -> block.1" and "blk.1.attn_norm.weight" in weight.find("failure").get(
        "message")


def test_junit_model_wide_finding_fails_every_listed_pair_and_warnings_do_not_fail(real, tmp_path):
    from normaudit.report import junit

    bad = gguf_eps(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf", 1e-5)
    doc = normaudit.audit(real / "hf/qwen3", bad).to_dict()
    root = ET.fromstring(junit.render(doc))
    eps = root.find("testsuite[@name='normaudit.eps_mismatch']")
    assert eps.get("tests") == "9" and eps.get("failures") == "9"  # one converter cause, every layer listed
    doc = normaudit.audit(real / "hf/gemma3", real / "gguf/qwen3-f32.gguf").to_dict()  # + a warning
    root = ET.fromstring(junit.render(doc))
    arch = root.find("testsuite[@name='normaudit.architecture_mismatch']")
    (case,) = arch.findall("testcase")
    assert case.find("failure") is None and "gemma3" in case.find("system-out").text
    assert int(root.find("testsuite[@name='normaudit.missing_norm']").get("failures")) >= 1


# -- SARIF -----------------------------------------------------------------------------------------------------

def _sarif_validator():
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft4Validator(json.loads((DATA / "sarif-schema-2.1.0.json").read_text()))


def test_sarif_validates_and_has_one_result_per_finding(failing):
    log = json.loads((failing["dir"] / "r.sarif").read_text())
    _sarif_validator().validate(log)
    (run,) = log["runs"]
    assert run["tool"]["driver"]["name"] == "normaudit" and log["version"] == "2.1.0"
    results = run["results"]
    assert [r["ruleId"] for r in results] == [f["check"] for f in failing["doc"]["findings"]] == \
        ["weight_mismatch", "activation_drift", "activation_drift"]
    target = run["artifacts"][0]
    assert target["roles"] == ["analysisTarget"] and target["location"]["uri"] == failing["bad"].as_uri()
    assert target["hashes"]["sha-256"] == hashlib.sha256(failing["bad"].read_bytes()).hexdigest()
    loc = results[0]["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["index"] == 0
    assert [x["name"] for x in loc["logicalLocations"]] == ["model.layers.1.input_layernorm", "blk.1.attn_norm"]
    assert all(r["level"] == "error" and r["partialFingerprints"] for r in results)
    rules = run["tool"]["driver"]["rules"]
    assert rules[results[0]["ruleIndex"]]["id"] == "weight_mismatch"


# -- baselines -------------------------------------------------------------------------------------------------

def test_baseline_round_trip_suppresses_exactly_what_it_recorded(real, tmp_path):
    src = real / "gguf/qwen3-f32.gguf"
    bad = gguf_edit_norm(src, tmp_path / "bad.gguf", {BROKEN_NORM, "blk.0.ffn_norm.weight"},
                         scale_channels([3, 7], 2.0))
    base = tmp_path / "baseline.json"
    args = ["compare", str(real / "hf/qwen3"), str(bad)]
    assert runner.invoke(app, args).exit_code == 1
    res = runner.invoke(app, args + ["--write-baseline", str(base), "--json", str(tmp_path / "w.json")])
    assert res.exit_code == 0, res.output  # recorded and accepted
    bl = json.loads(base.read_text())
    assert bl["schema"] == "normaudit.baseline/1" and len(bl["findings"]) == 2
    assert {(e["check"], e["a"], e["b"]) for e in bl["findings"]} == {
        ("weight_mismatch", "model.layers.1.input_layernorm", "blk.1.attn_norm"),
        ("weight_mismatch", "model.layers.0.post_attention_layernorm", "blk.0.ffn_norm")}
    assert all(e["reason"] == "" and e["values"]["rel_l2"] > 0 for e in bl["findings"])
    # fill in one reason, drop the other entry: exactly the one left is suppressed
    bl["findings"] = [e for e in bl["findings"] if e["b"] == "blk.1.attn_norm"]
    bl["findings"][0]["reason"] = "known: channel scale fixed upstream"
    base.write_text(json.dumps(bl))
    res = runner.invoke(app, args + ["--baseline", str(base), "--json", "-"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    by_b = {f["b"]: f for f in doc["findings"]}
    assert by_b["blk.1.attn_norm"]["suppressed"] is True and by_b["blk.1.attn_norm"]["severity"] == "error"
    assert by_b["blk.1.attn_norm"]["reason"] == "known: channel scale fixed upstream"
    assert "suppressed" not in by_b["blk.0.ffn_norm"] and doc["passed"] is False
    assert doc["baseline"] == {"path": str(base), "entries": 1, "suppressed": 1, "stale": []}
    # the same layer broken differently (values beyond tolerance) is not suppressed; the entry is stale
    other = gguf_edit_norm(src, tmp_path / "other.gguf", {BROKEN_NORM}, scale_channels([3, 7], 3.0))
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(other), "--baseline", str(base), "--json", "-"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and not any(f.get("suppressed") for f in doc["findings"])
    assert [s["b"] for s in doc["baseline"]["stale"]] == ["blk.1.attn_norm"]
    # a clean file: passes, and the baseline entry is flagged as no longer occurring
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(src), "--baseline", str(base)])
    assert res.exit_code == 0 and "1 baseline entry no longer occurs" in res.output
    # rewriting a baseline keeps the reasons of the entries that still match
    res = runner.invoke(app, args + ["--baseline", str(base), "--write-baseline", str(tmp_path / "b2.json")])
    assert res.exit_code == 0
    reasons = {e["b"]: e["reason"] for e in json.loads((tmp_path / "b2.json").read_text())["findings"]}
    assert reasons == {"blk.1.attn_norm": "known: channel scale fixed upstream", "blk.0.ffn_norm": ""}


def test_baseline_suppresses_activation_drift_and_renderers_show_it(failing, tmp_path):
    base = tmp_path / "b.json"
    args = failing["args"][:4] + ["--activations", "--write-baseline", str(base), "--sarif", str(tmp_path / "s.sarif"),
                                  "--junit", str(tmp_path / "j.xml"), "--json", str(tmp_path / "r.json")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [f["check"] for f in doc["findings"] if f.get("suppressed")] == ["weight_mismatch", "activation_drift",
                                                                            "activation_drift"]
    assert doc["passed"] is True and doc["activations"]["first_divergence"] is not None
    log = json.loads((tmp_path / "s.sarif").read_text())
    _sarif_validator().validate(log)
    assert all(r["suppressions"][0]["kind"] == "external" for r in log["runs"][0]["results"])
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.get("failures") == "0" and root.get("skipped") == "3"


def test_a_bad_baseline_is_one_line(real, tmp_path):
    (tmp_path / "b.json").write_text('{"schema": "something else"}')
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf"), "--baseline",
                              str(tmp_path / "b.json")])
    assert res.exit_code == 2 and "not a normaudit baseline" in res.output
    assert len(res.output.strip().splitlines()) == 1


# -- GitHub annotations ----------------------------------------------------------------------------------------

def test_github_annotations_when_running_in_actions(failing):
    res = runner.invoke(app, failing["args"][:4], env={"GITHUB_ACTIONS": "true"})
    assert res.exit_code == 1
    lines = [line for line in res.stderr.splitlines() if line.startswith("::")]
    assert len(lines) == 3  # one per finding: the weight and the two activation anomalies
    assert lines[0].startswith(f"::error file={failing['bad']},line=1,title=normaudit weight_mismatch::")
    assert "model.layers.1.input_layernorm -> blk.1.attn_norm" in lines[0]
    assert lines[1].startswith(f"::error file={failing['bad']},line=1,title=normaudit activation_drift::")
    assert "::" not in runner.invoke(app, failing["args"][:4], env={"GITHUB_ACTIONS": ""}).output


def test_annotation_text_is_escaped():
    from normaudit.report.github import annotations

    doc = {"fail_on": "error", "b": {"path": "a,b:c.gguf"},
           "findings": [{"check": "x", "severity": "warning", "a": None, "b": None, "message": "50%\nline", "hint": ""}]}
    (line,) = annotations(doc)
    assert line == "::warning file=a%2Cb%3Ac.gguf,line=1,title=normaudit x::x: 50%25%0Aline"


def test_stale_model_wide_baseline_entry_annotation_names_the_model():
    from normaudit.report.github import annotations

    doc = {"fail_on": "error", "b": {"path": "b.gguf"}, "findings": [],
           "baseline": {"stale": [{"check": "eps_mismatch", "a": None, "b": None}]}}
    assert annotations(doc) == ["::warning title=normaudit baseline::baseline entry no longer occurs: eps_mismatch "
                                "(model) -> (model)"]


# -- JSON document ---------------------------------------------------------------------------------------------

def test_document_records_version_time_and_input_hashes(failing, real):
    doc = failing["doc"]
    assert doc["normaudit_version"] == normaudit.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created"])
    (b,) = doc["b"]["files"]
    assert b == {"name": "bad.gguf", "size": failing["bad"].stat().st_size,
                 "sha256": hashlib.sha256(failing["bad"].read_bytes()).hexdigest()}
    names = [f["name"] for f in doc["a"]["files"]]
    assert "config.json" in names and "model.safetensors" in names  # a directory: each file in it
    st = next(f for f in doc["a"]["files"] if f["name"] == "model.safetensors")
    assert st["sha256"] == hashlib.sha256((real / "hf/qwen3/model.safetensors").read_bytes()).hexdigest()


def test_huge_files_get_size_and_mtime_instead_of_sha256(tm, monkeypatch):
    from normaudit.report import provenance

    monkeypatch.setattr(provenance, "HASH_LIMIT", 1000)
    res = runner.invoke(app, ["inspect", str(tm / "qwen3/qwen3-q8_0.gguf"), "--json", "-", "--no-stats"])
    (f,) = json.loads(res.stdout)["files"]
    assert f["sha256"] is None and f["size"] > 1000 and re.fullmatch(r"\d{4}-.*Z", f["mtime"])
    assert "size and mtime instead of sha256" in f["note"]


def test_documents_validate_against_the_shipped_schemas(failing, tm, real, tmp_path):
    pytest.importorskip("jsonschema")
    from normaudit.report import schemas

    schemas.validate(failing["doc"])
    schemas.validate(normaudit.audit(real / "onnx/cnn.pt2", real / "onnx/cnn-legacy-opset13.onnx").to_dict())
    quant = normaudit.audit(real / "hf/qwen3", real / "gguf/qwen3-Q4_K_M.gguf", activations=True, sensitivity=True)
    doc = json.loads(json.dumps(quant.to_dict(), default=float))
    assert doc["activations"]["weights"] and doc["activations"]["output"] and doc["activations"]["sensitivity"]
    schemas.validate(doc)
    # asked for with --sensitivity, the ranking is printed without --verbose too: its top 5 rows
    import io

    from rich.console import Console

    from normaudit.report.table import compare_view

    console = Console(width=140, file=io.StringIO(), record=True)
    for part in compare_view(doc, 140):
        console.print(part)
    text = console.export_text()
    n = len(doc["activations"]["sensitivity"])
    assert f"top 5 of {n})" in text and doc["activations"]["sensitivity"][0]["tensor"] in text
    assert doc["activations"]["sensitivity"][5]["tensor"] not in text
    for model in ("qwen3/qwen3-q8_0.gguf", "bert/bert-legacy-opset14.onnx", "cnn/cnn.pt2"):
        res = runner.invoke(app, ["inspect", str(tm / model), "--json", "-"])
        doc = json.loads(res.stdout)
        schemas.validate(doc)
    base = tmp_path / "b.json"
    runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(failing["bad"]), "--write-baseline", str(base)])
    schemas.validate(json.loads(base.read_text()))
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        schemas.validate(dict(failing["doc"], passed="yes"))
    # the schema files ship inside the package
    assert (Path(schemas.__file__).parent / "schema" / "compare.json").is_file()


def test_input_accepts_a_reports_recorded_inputs_and_save_inputs(failing, real, tmp_path):
    doc = failing["doc"]
    npz = tmp_path / "in.npz"
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf"), "--activations",
                              "--input", str(failing["dir"] / "r.json"), "--save-inputs", str(npz), "--json", "-"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)["activations"]["inputs"]
    assert again["input_ids"]["values"] == doc["activations"]["inputs"]["input_ids"]["values"]
    assert again["source"].startswith("json:") and "default seeded tokens" in again["source"]
    saved = np.load(npz)
    assert saved["input_ids"].tolist() == doc["activations"]["inputs"]["input_ids"]["values"]
    # the inputs object alone works too, and a float image input is recorded with its values
    r = normaudit.audit(real / "onnx/cnn.pt2", real / "onnx/cnn-legacy-opset13.onnx", activations=True)
    rec = r.to_dict()["activations"]["inputs"]
    (tmp_path / "inputs.json").write_text(json.dumps(rec))
    r2 = normaudit.audit(real / "onnx/cnn.pt2", real / "onnx/cnn-legacy-opset13.onnx", activations=True,
                         input_npz=str(tmp_path / "inputs.json"))
    name = next(k for k, v in rec.items() if isinstance(v, dict))
    assert np.array_equal(r2.activations.feeds[name], r.activations.feeds[name])
    assert [p.metrics["rel_l2"] for p in r2.activations.points] == [p.metrics["rel_l2"] for p in r.activations.points]
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    res = runner.invoke(app, ["compare", str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf"), "--activations",
                              "--input", str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "no recorded inputs" in res.output


# -- terminal --------------------------------------------------------------------------------------------------

def test_terminal_findings_and_verdict_first_pairs_under_verbose_80_columns(failing):
    args = failing["args"][:4]
    out = runner.invoke(app, args, env={"COLUMNS": "80"}).output
    lines = out.splitlines()
    verdict = " ".join(lines[:2])  # wrapped at a word boundary for 80 columns
    assert verdict == ("FAIL: 3 errors, 0 warnings (fail on error); activations: 2 anomalies, first at "
                       "model.layers.1.input_layernorm (norm)")
    assert "weight_mismatch" in out and "first divergence" in out
    assert "blk.0.attn_norm" not in out  # the pair list is for --verbose
    assert all(len(line) <= 80 for line in lines if " " in line.strip())  # only an unbreakable name may be longer
    assert not any(line != line.rstrip() for line in lines)
    verbose = runner.invoke(app, args + ["--verbose"], env={"COLUMNS": "80"}).output
    assert verbose.index("\nfindings\n") < verbose.index("\naligned pairs\n") < verbose.index("activations, in execution")
    assert "model.layers.0.input_layernorm -> blk.0.attn_norm" in verbose  # names whole, never folded
    assert verbose.strip().splitlines()[-2:] == lines[:2]  # the verdict again after the long tables
    quiet = runner.invoke(app, args + ["--quiet"], env={"COLUMNS": "80"})
    assert quiet.exit_code == 1 and quiet.output.strip().splitlines() == [verdict]  # one line for scripts


def test_markup_in_names_is_printed_as_is(tm):
    out = runner.invoke(app, ["inspect", str(tm / "gemma3/gemma3-q4_0.gguf")]).output
    assert "[gguf/gguf, gemma3]" in out and "blk.0.attn_q_norm (qk_norm)" in out and "Role." not in out
    from rich.console import Console

    from normaudit.report.table import finding_block

    console = Console(file=io.StringIO(), width=80)
    console.print(finding_block({"check": "x", "severity": "error", "a": "[bold]a[/bold]", "b": "b",
                                 "message": "[red]m[/red]", "hint": ""}, "error"))
    assert "[bold]a[/bold]" in console.file.getvalue() and "[red]m[/red]" in console.file.getvalue()


def test_help_short_flag_and_flags_without_value_types():
    for args in (["-h"], ["compare", "-h"], ["inspect", "-h"]):
        res = runner.invoke(app, args, env={"COLUMNS": "120"})
        assert res.exit_code == 0 and "Usage" in res.output and "<bool>" not in res.output
    out = runner.invoke(app, ["compare", "-h"], env={"COLUMNS": "120"}).output
    for flag in ("--html", "--junit", "--sarif", "--baseline", "--write-baseline", "--save-inputs", "--quiet",
                 "--verbose"):
        assert flag in out
    trust = next(line for line in out.splitlines() if "--trust-pickle" in line)
    assert "--no-trust-pickle" not in trust


# -- progress --------------------------------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.events = []

    def begin(self, task, total=None, unit=""):
        self.events.append(("begin", task, total, unit))

    def advance(self, task, amount=1.0):
        self.events.append(("advance", task, amount))

    def end(self, task):
        self.events.append(("end", task))


def test_library_reports_progress_and_prints_nothing(real, capfd):
    rec = Recorder()
    r = normaudit.audit(real / "hf/qwen3", real / "gguf/qwen3-Q4_K_M.gguf", activations=True, sensitivity=True,
                        progress=rec)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    begun = {e[1]: e for e in rec.events if e[0] == "begin"}
    lockstep = "running A and B block by block"  # HF vs its GGUF replay: one block of each in memory at a time
    assert {"loading A (qwen3)", "loading B (qwen3-Q4_K_M.gguf)", lockstep} <= set(begun)
    n_blocks = sum(1 for e in rec.events if e[0] == "advance" and e[1] == lockstep)
    assert begun[lockstep][2:] == (n_blocks, "blocks") and n_blocks == 2
    assert len(r.activations.sensitivity) > 0  # ranked in the same pass, block by block
    assert sum(e[0] == "begin" for e in rec.events) == sum(e[0] == "end" for e in rec.events)


def test_plain_progress_lines_with_counts_and_eta():
    from normaudit.report.console import PlainProgress

    now = [0.0]
    buf = io.StringIO()
    p = PlainProgress(buf, interval=10, clock=lambda: now[0])
    p.begin("sensitivity", 40, "tensors")
    p.begin("quick", None, "")
    p.end("quick")  # short steps print nothing
    p.advance("sensitivity", 10)
    now[0] = 12.0
    p.tick()
    now[0] = 13.0
    p.end("sensitivity")
    assert buf.getvalue().splitlines() == [
        "normaudit: sensitivity: 10/40 tensors (25%, 12s elapsed, ETA 36s)",
        "normaudit: sensitivity: done in 13s"]


def test_cli_prints_plain_progress_lines_in_logs_and_none_with_quiet(real):
    args = ["compare", str(real / "hf/qwen3"), str(real / "gguf/qwen3-f32.gguf"), "--activations"]
    res = runner.invoke(app, args, env={"NORMAUDIT_PROGRESS_INTERVAL": "0.001"})
    assert res.exit_code == 0
    assert re.search(r"^normaudit: running B: \d+/\d+ points", res.stderr, re.M) or "normaudit: running" in res.stderr
    assert "done in" in res.stderr and res.stdout.startswith("PASS")
    res = runner.invoke(app, args + ["--quiet"], env={"NORMAUDIT_PROGRESS_INTERVAL": "0.001"})
    assert res.stderr == "" and res.output.strip().startswith("PASS")


def test_rich_progress_on_a_terminal():
    from rich.console import Console

    from normaudit.report.console import progress_display

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress_display(console) as p:
        p.begin("running B", 4, "points")
        p.advance("running B", 2)
        p.bars.refresh()
        p.end("running B")
    assert "running B" in console.file.getvalue() and "2/4 points" in console.file.getvalue()


# -- config, Action, README ------------------------------------------------------------------------------------

def _readme_block(after: str, lang: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    return m.group(1)


def test_readme_config_snippet_works_in_both_files(tmp_path):
    from normaudit.config import find_config_file, load_thresholds

    snippet = _readme_block("**Thresholds**", "toml")
    assert "[tool.normaudit]" in snippet
    for name in ("normaudit.toml", "pyproject.toml"):
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        (d / name).write_text(snippet)
        assert find_config_file(d) == d / name
        th = load_thresholds(d / name)
        assert th.fail_on == "warning" and th.rel_l2["F16"] == 2e-3 and th.rel_l2["Q4_K"] == 0.1


def test_action_is_a_composite_that_gates_on_compare(real, tmp_path):
    yaml = pytest.importorskip("yaml")
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    assert {"source", "converted", "args"} <= set(action["inputs"])
    # run the compare step's script as the runner would (its inputs come in through env)
    step = next(s for s in steps if s.get("id") == "compare")
    out_file = tmp_path / "gh_output"
    bad = gguf_eps(real / "gguf/qwen3-f32.gguf", tmp_path / "bad.gguf", 1e-5)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "normaudit").write_text(f"#!/bin/sh\nexec {sys.executable} -m normaudit \"$@\"\n")
    (bindir / "normaudit").chmod(0o755)
    env = dict(os.environ, SOURCE=str(real / "hf/qwen3"), CONVERTED=str(bad), ARGS="--fail-on warning",
               REPORT_DIR=str(tmp_path / "rep"), GITHUB_OUTPUT=str(out_file), PATH=f"{bindir}:{os.environ['PATH']}",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run(["bash", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out_file.read_text().split() == ["exit-code=1", "passed=false"]
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.html", "junit.xml", "report.sarif",
                                                              "report.json"}
    gate = steps[-1]
    for code, fail, expect in (("1", "true", 1), ("1", "false", 0), ("2", "false", 2), ("0", "true", 0)):
        rc = subprocess.run(["bash", "-c", gate["run"]], env=dict(os.environ, CODE=code, FAIL=fail),
                            capture_output=True).returncode
        assert rc == expect, (code, fail)


def test_readme_example_workflow_uses_the_action(tmp_path):
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load(_readme_block("example workflow", "yaml"))
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    (action,) = [s for s in steps if "normaudit" in s.get("uses", "")]
    assert {"source", "converted"} <= set(action["with"])
