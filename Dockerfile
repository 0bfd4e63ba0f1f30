# Simulacra in a container: the built-in server on 8900, an embedded SQLite store in /data.
# Not built or run by the test suite (no container engine where it runs): see docs/deploy.md.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY simulacra ./simulacra
RUN pip install --no-cache-dir . && mkdir /data
EXPOSE 8900
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8900/health', timeout=2).status != 200)"
CMD ["simulacra", "serve", "--host", "0.0.0.0", "--port", "8900", "--store", "sqlite:////data/simulacra.db"]
