# callback-ari service image: non-root, no build tools at run time.
# Dependencies come from the committed lock at their pinned versions, checked by hash.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/callback-ari
ENV PATH=/opt/callback-ari/bin:$PATH
COPY .ci/requirements.lock ./.ci/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r .ci/requirements.lock
COPY setup.cfg pyproject.toml README.md LICENSE ./
COPY callback_ari ./callback_ari
# callback_ari/dialplan links to dialplan/: the kit and the example config ride in the wheel
COPY dialplan ./dialplan
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && pip uninstall --yes setuptools

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin callback-ari
COPY --from=build /opt/callback-ari /opt/callback-ari
ENV PATH=/opt/callback-ari/bin:$PATH
COPY dialplan/callback_ari.conf /etc/asterisk/callback_ari.conf
USER callback-ari
ENV PYTHONUNBUFFERED=1
EXPOSE 8090 4573
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8090/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["callback-ari", "--log-format", "json"]
CMD ["-c", "/etc/asterisk/callback_ari.conf", "run"]
