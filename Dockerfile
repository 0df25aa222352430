# callback-ari service image: non-root, no build tools at run time.
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY callback_ari ./callback_ari
# callback_ari/dialplan links to dialplan/: the kit and the example config ride in the wheel
COPY dialplan ./dialplan
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin callback-ari
COPY --from=build /install /usr/local
COPY dialplan/callback_ari.conf /etc/asterisk/callback_ari.conf
USER callback-ari
ENV PYTHONUNBUFFERED=1
EXPOSE 8090 4573
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8090/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["callback-ari", "--log-format", "json"]
CMD ["-c", "/etc/asterisk/callback_ari.conf", "run"]
