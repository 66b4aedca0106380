"""The CLI: table, JSON report, heatmap; bad input gives one clear error line."""
import pytest

from conftest import gpu_available
from llm.attribute import main
from probes.cli import guarded_main
from probes.report import load_report


def test_cli_report_and_plot(tmp_path, capsys):
    js, png = tmp_path / "r.json", tmp_path / "h.png"
    assert main(["--device", "cpu", "--model", "mistral-tiny", "--reference", "", "--variant",
                 "round=L0.gate_proj:bfloat16", "--prompt", "I enjoy walking in the", "--gen-steps", "2",
                 "--json", str(js), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "L0.gate_proj" in out.split("causal [correct (default)]")[1].splitlines()[2]
    assert "L0.gate_proj" in out.split("causal [inject]")[1].splitlines()[2]
    rep = load_report(js)
    assert rep["probe"] == "llm" and rep["fingerprint"]
    keys = {e["key"] for e in rep["experiments"]}
    assert "llm/prompt/drift" in keys and "llm/prompt/causal/op/L0.gate_proj" in keys
    assert "llm/prompt/causal-inject/op/L0.gate_proj" in keys and "llm/prompt/restore/L0" in keys
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model"], "unknown model"),
    (["--model", "mistral-tiny", "--prompt-file", "/no/such/file.txt"], "cannot read prompt file"),
    (["--model", "mistral-tiny", "--prompt", "x" * 5000], "longer than the model's context"),
    (["--model", "mistral-tiny", "--variant", "dtype=int3"], "dtype"),
    (["--model", "mistral-tiny", "--variant", "colour=blue"], "unknown key"),
    (["--model", "mistral-tiny", "--variant", "round=L0.q_proj:float7"], "unknown format"),
    (["--model", "mistral-tiny", "--variant", "round=L2.q_proj:bfloat16"], "round=L2.q_proj:bfloat16 selects nothing"),
    (["--model", "mistral-tiny", "--reference", "inner=*.lm_head:mean_square:bfloat16"], "mean_square is a step of"),
    pytest.param(["--model", "mistral-tiny", "--device", "cuda"], "GPU",     # with a GPU, --device cuda runs
                 marks=pytest.mark.skipif(gpu_available(), reason="checks the no-GPU error")),
])
def test_cli_bad_input(args, message, capsys):
    assert guarded_main(main, ["--device", "cpu", "--units", "none", "--gen-steps", "0", "--no-local"] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.smollm2_data
def test_cli_different_tokenizers(tmp_path, capsys):
    # a local HF folder of another tiny model with another tokenizer is not needed: SmolLM2 vs tiny Mistral
    assert guarded_main(main, ["--device", "cpu", "--model", "mistral-tiny", "--variant-model", "smollm2", "--variant", "",
                               "--units", "none", "--gen-steps", "0"]) == 2
    assert "tokenise differently" in capsys.readouterr().err
