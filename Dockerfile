# One image for the API and the worker:
#   docker run IMAGE sagebridge api      docker run IMAGE sagebridge worker
# Apply migrations once per release with: docker run IMAGE sagebridge migrate
#
# The base image is pinned by digest: python:3.11.10-slim-bookworm as resolved by Renovate in
# github.com/nalabelle/build, images/digests.Dockerfile, commit e522f90c79f1 (2024-10-19).
# Refresh it with `docker pull python:3.11-slim` and the digest that prints (or Renovate).
FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 API_HOST=0.0.0.0 LOG_JSON=true
WORKDIR /srv/sagebridge

# Dependencies from the hash-checked runtime lock (its own pip and setuptools included), then
# the project without dependencies or build isolation: nothing unpinned is fetched.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY sandbox ./sandbox
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --home /srv/sagebridge sagebridge \
    && mkdir -m 0700 /srv/sagebridge/.sagebridge && chown sagebridge /srv/sagebridge/.sagebridge
USER sagebridge

EXPOSE 8000
CMD ["sagebridge", "api"]
