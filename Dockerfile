# The segstream image used by docker-compose.yml for the worker and the producer.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
# Every top-level package pyproject.toml installs (segstream/ holds the `segstream` entry point,
# segstream.cli:main); tests/ and benchmarks/ stay out (.dockerignore).
COPY schemas ./schemas
COPY segstream ./segstream
COPY worker ./worker
COPY analytics ./analytics
COPY producers ./producers
COPY devstack ./devstack
RUN pip install .
RUN useradd --create-home segstream
USER segstream
ENTRYPOINT ["segstream"]
CMD ["--help"]
