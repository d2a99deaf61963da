# capsearch server image. Models and data live in volumes so a new image keeps both.
#   docker build -t capsearch .                                  # CPU build of torch
#   docker build --build-arg TORCH_INDEX=cu128 -t capsearch .    # CUDA 12.8 build of torch
#   docker run -p 8000:8000 -v capsearch-models:/models_cache -v capsearch-data:/data capsearch

# The page's JavaScript (htmx, its WebSocket extension, hash-wasm) comes from npm, pinned by the
# lockfile; the linter (devDependencies) stays out of the image.
FROM node:20-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim
ARG TORCH_INDEX=cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CAPSEARCH_SERVER__HOST=0.0.0.0 \
    CAPSEARCH_MODELS__CACHE_DIR=/models_cache \
    CAPSEARCH_STORAGE__DIR=/data/media \
    CAPSEARCH_DATABASE__URL=sqlite+aiosqlite:////data/capsearch.db

WORKDIR /app
# IANA time zones: search's date filters read a day in the person's own zone (README "Sort and filter").
RUN apt-get update && apt-get install -y --no-install-recommends tzdata && rm -rf /var/lib/apt/lists/*
# torch first, from the index that matches the hardware, so the project install reuses it.
RUN pip install "torch==2.13.0" --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"
COPY pyproject.toml requirements.lock README.md alembic.ini ./
COPY src ./src
COPY alembic ./alembic
# The runtime packages at the versions CI tested: the lock as constraints, so its dev tools stay out.
RUN pip install -c requirements.lock -e .
COPY web ./web
COPY --from=web /web/node_modules ./web/node_modules

VOLUME ["/models_cache", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# Migrate, then serve: a new volume or a new version always starts on the right schema.
CMD ["sh", "-c", "capsearch migrate && exec capsearch serve"]
