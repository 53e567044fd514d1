# syntax=docker/dockerfile:1
# The auth-service image: `docker build -t auth-service .`, or `docker compose up` with compose.yaml.
# CI builds and runs it with podman (.ci/dockerfile-check): healthy, uid 1000, PID 1, /data, a clean
# stop. No secret belongs here: every secret (KEY_ENCRYPTION_SECRET, METRICS_TOKEN, database
# passwords) comes from the environment at run time.

# Build stage: the tools node-gyp needs to compile better-sqlite3 where no prebuilt binary fits,
# every dependency, the TypeScript build, then the dev dependencies pruned away.
FROM node:22-slim AS build
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# The manifests alone first: the dependency layer is reused while only the sources change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# Runtime stage: production dependencies and the compiled service only, no compiler, run as `node`.
FROM node:22-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite:/data/auth.db
WORKDIR /app
# Owned by root, so the service user cannot change its own code.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The SQLite directory, writable by `node` (uid 1000 in the node images). Made before VOLUME, so a
# new volume starts out with this owner. With PostgreSQL (DATABASE_URL=postgres://…) it stays empty.
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]
USER node
EXPOSE 8000
# Liveness only (no database): readiness is GET /api/health/ready. slim has no curl; node's fetch is
# enough. The container's PORT is honoured; ALLOWED_HOSTS, if set, must include 127.0.0.1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8000) + '/api/health', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form, so node itself is PID 1 and gets `docker stop`'s SIGTERM. The kernel gives PID 1 no
# default signal actions, so only a process that handles SIGTERM stops on it: server.ts does
# (close-with-grace: stop accepting, finish the requests in flight, close the database, exit 0, at
# most 10 s; compose.yaml gives 15 s before SIGKILL). A shell-form CMD would put /bin/sh at PID 1,
# which does not pass the signal on. Node starts no child processes, so nothing needs reaping;
# `docker run --init` is not needed (and harmless). The flags are `npm start`'s (test/container.test.ts
# keeps them equal): a small young generation keeps the resident memory down at no cost in speed,
# and an old generation capped at 160 MB (the live heap stays under about 50 MB: every cache is
# bounded) makes V8 collect garbage before it grows the heap towards its default limit.
CMD ["node", "--max-semi-space-size=4", "--max-old-space-size=160", "dist/server.js"]
