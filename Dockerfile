# The segstream image used by docker-compose.yml for the worker and the producer.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY producers ./producers
COPY worker ./worker
RUN pip install .
RUN useradd --create-home segstream
USER segstream
ENTRYPOINT ["segstream"]
CMD ["--help"]
