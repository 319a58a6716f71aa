# mailwire container image.
#
#   docker build -t mailwire .
#   docker run -d --name mailwire --init --stop-timeout 15 \
#     -p 25:2525 \
#     -p 127.0.0.1:8025:8025 \
#     -v mailwire-data:/var/lib/mailwire \
#     -v "$PWD/domains:/etc/mailwire/domains:ro" \
#     -e MAILWIRE_SPAMD=spamd:783 \
#     mailwire
#
# Inside the container mailwire listens on 0.0.0.0, which is not loopback: only recipients
# matched by the domains table are accepted (default deny, see config/domains and
# docs/configuration.md). Mount your own domains file at /etc/mailwire/domains, or every
# RCPT TO gets 554 5.7.1 Relay access denied.

# ---------------------------------------------------------------------------------------
# Stage 1: build. TypeScript -> dist/, production node_modules with the native addon.
# ---------------------------------------------------------------------------------------
FROM node:20-bookworm-slim AS build

# better-sqlite3 is a native addon: node-gyp needs python3, make and a C++ compiler when no
# prebuilt binary can be downloaded.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first: a source change does not invalidate this (slow) layer.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

# Sources (.dockerignore keeps out node_modules, dist, data, keys and tests).
COPY . .
# web/ and config/ may be empty in a checkout (git keeps no empty folders); the runtime
# stage copies them either way.
RUN mkdir -p web config \
 && npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# ---------------------------------------------------------------------------------------
# Stage 2: runtime. No compiler, no dev dependencies, not root.
# ---------------------------------------------------------------------------------------
FROM node:20-bookworm-slim AS runtime

# MAILWIRE_CONFIG_DIR: mailwire.yml and the tables (domains, ...).
# MAILWIRE_DATA_DIR: SQLite database, raw messages, attachments, spool, and certs/.
# Other overrides for docker run -e: MAILWIRE_SMTP_HOST, MAILWIRE_SMTP_PORT, MAILWIRE_HTTP_HOST,
# MAILWIRE_HTTP_PORT, MAILWIRE_SPAMD (host:port or off; the default 127.0.0.1:783 has no
# spamd inside this container, so mail is accepted with spam.status "error" until it is set).
ENV NODE_ENV=production \
    MAILWIRE_CONFIG_DIR=/etc/mailwire \
    MAILWIRE_DATA_DIR=/var/lib/mailwire

# The unprivileged user mailwire runs as (uid/gid 10001: above any host system range, so a
# bind-mounted data directory is owned by nobody else: chown -R 10001:10001 it).
RUN groupadd --system --gid 10001 mailwire \
 && useradd --system --uid 10001 --gid mailwire --home-dir /var/lib/mailwire \
      --no-create-home --shell /usr/sbin/nologin mailwire \
 && mkdir -p /var/lib/mailwire/certs /etc/mailwire \
 && chown -R mailwire:mailwire /var/lib/mailwire \
 && chmod 0700 /var/lib/mailwire /var/lib/mailwire/certs

WORKDIR /app

# The application, owned by root and read-only for the mailwire user.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/web ./web
# The shipped config/ (every key commented with its default) stays here as a reference.
COPY --from=build /app/config ./config

# Configuration for the container, in /etc/mailwire (MAILWIRE_CONFIG_DIR):
#  - mailwire.yml: listen on all interfaces of the container (publish ports with -p), and
#    keep TLS material in the data volume. tls.cert/tls.key have no environment override,
#    so a mailwire.yml you mount here yourself must set them too (start from this one:
#    docker run --rm mailwire cat /etc/mailwire/mailwire.yml).
#  - domains: the commented example, so nothing is accepted until you mount your own.
# Also, /app/certs points into the data volume, so the default relative paths (certs/...)
# land there as well if a mounted mailwire.yml leaves tls.* out.
# The last two commands check the shipped configuration and that the native SQLite addon
# loads in this image.
RUN printf '%s\n' \
      '# mailwire.yml of the container image. Every other key keeps its default:' \
      '# see /app/config/mailwire.yml (all keys, commented) and docs/configuration.md.' \
      'smtp:' \
      '  # All interfaces of the container: not loopback, so /etc/mailwire/domains decides' \
      '  # which recipients are accepted (default deny).' \
      '  host: 0.0.0.0' \
      'http:' \
      '  # Not loopback, so the API, feed, viewer and /metrics need a login (http.auth: Basic' \
      '  # against /etc/mailwire/password, made with mailwire pw, or http.auth.tokens). With' \
      '  # neither, a random token is made at each start and logged once: docker logs shows it.' \
      '  # /healthz and /readyz stay open for the HEALTHCHECK; POST /submit follows relayhosts.' \
      '  host: 0.0.0.0' \
      '  # Host names the API answers to, besides loopback names (DNS-rebinding defence: a web' \
      '  # page cannot reach the API through a name it controls). Add the name you use.' \
      '  allowed_hosts: [localhost]' \
      'tls:' \
      '  # Generated self-signed on first start when both are missing; see certs/README.md.' \
      '  cert: /var/lib/mailwire/certs/cert.pem' \
      '  key: /var/lib/mailwire/certs/key.pem' \
      > /etc/mailwire/mailwire.yml \
 && cp /app/config/domains /etc/mailwire/domains \
 && ln -s /var/lib/mailwire/certs /app/certs \
 && node dist/src/cli.js check-config --config-dir /etc/mailwire \
 && node -e "new (require('better-sqlite3'))(':memory:').close()"

# Volumes:
#   /var/lib/mailwire  data (MAILWIRE_DATA_DIR): mailwire.db, messages/, spool/, certs/.
#                      Must be writable by uid 10001. Mail answered 250 is in here: keep it.
#   /etc/mailwire      configuration (MAILWIRE_CONFIG_DIR): mailwire.yml, domains, the Haineko
#                      tables (mailertable, sendermt, authinfo, relayhosts, recipients,
#                      password) and hooks/. Read-only is fine; tables and hooks are reloaded
#                      when they change (mount the directory rather than single files to see
#                      edits live). `docker run --rm mailwire node dist/src/cli.js setup --dest
#                      /tmp/x` shows commented starters for every file.
VOLUME ["/var/lib/mailwire", "/etc/mailwire"]

# Ports (inside the container; map them with -p, e.g. -p 25:2525):
#   2525  SMTP with STARTTLS (smtp.port, MAILWIRE_SMTP_PORT)
#   8025  HTTP: REST API, WebSocket feed, web viewer, POST /submit, /healthz, /readyz,
#         /metrics (http.port, MAILWIRE_HTTP_PORT)
#   4650  SMTP with implicit TLS, only when configured (smtp.tls_port: 4650); then also
#         publish it, e.g. -p 465:4650. Not exposed by default.
EXPOSE 2525 8025

# Ready = listeners up and the store writable. No curl in the slim image: Node's fetch.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.MAILWIRE_HTTP_PORT || 8025) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1)).catch(() => process.exit(1))"]

# mailwire (uid 10001), given as numbers so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# SIGTERM stops gracefully: sessions get smtp.shutdown_grace_ms (10 s) to finish, so give
# docker stop a little more (--stop-timeout 15). Run with --init (or tini) to reap children.
# The Node flags are package.json's config.node_flags, as `npm start` uses them (README, Performance).
CMD ["node", "--max-semi-space-size=32", "dist/src/cli.js", "start"]
