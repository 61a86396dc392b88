# One image for the API and the worker:
#   docker run IMAGE sagebridge api      docker run IMAGE sagebridge worker
# Apply migrations once per release with: docker run IMAGE sagebridge migrate
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 API_HOST=0.0.0.0 LOG_JSON=true
WORKDIR /srv/sagebridge

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --home /srv/sagebridge sagebridge \
    && chown -R sagebridge /srv/sagebridge
USER sagebridge

EXPOSE 8000
CMD ["sagebridge", "api"]
