# The streamrec image: the same package runs the worker and the lookup API.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
COPY stream_app ./stream_app
COPY producers ./producers
COPY consumers ./consumers
RUN pip install --no-cache-dir .
ENV STREAMREC_STATE_DIR=/var/lib/streamrec
VOLUME /var/lib/streamrec
ENTRYPOINT ["streamrec"]
