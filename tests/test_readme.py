"""The README's code runs: its agent example is executed against the real runtime."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from agentfn.events import CloudEvent, from_http, to_binary

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_the_readme_has_an_agent_example() -> None:
    assert any("Agent(" in block for block in python_blocks())


async def test_the_agent_example_answers_as_the_readme_says() -> None:
    namespace: dict[str, object] = {}
    # The "Writing an agent" example (others, such as ctx.infer's, need a server to answer).
    (block,) = [b for b in python_blocks() if "Agent(" in b and '"qa.asked"' in b]
    exec(compile(block, "README.md", "exec"), namespace)
    agent = namespace["agent"]
    app = agent.app()  # type: ignore[attr-defined]
    headers, body = to_binary(CloudEvent.new("qa.asked", "/readme", {"text": "three short words"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        response = await client.post("/", headers=headers, content=body)
    assert response.status_code == 200
    (reply,) = from_http(dict(response.headers), response.content)
    assert reply.type == "qa.answered"
    assert reply.data == {"words": 3}
