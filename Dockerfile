# syntax=docker/dockerfile:1
# Taskflow: one image for every target. `docker build -t taskflow:0.1.0 .`
#   docker run taskflow:0.1.0                  all targets in one process (embedded PGlite + bus in /app/.data)
#   docker run taskflow:0.1.0 serve api        one target (Kubernetes: one Deployment per target)
#   docker run taskflow:0.1.0 migrate          apply the database migrations and exit
# Configuration comes from the environment (src/config.ts); see docs/deploy.md.

ARG NODE_IMAGE=node:24-bookworm-slim

# --- build: type-check, then compile TypeScript to dist/ (scripts/build.mjs, with the SQL migrations) ------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/build.mjs ./scripts/
COPY src ./src
RUN npx tsc -p tsconfig.json --noEmit && npm run build

# --- deps: production dependencies only ------------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- runtime ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY web ./web
# The published event schemas (`taskflow schemas check`, and what a registry or another team reads).
COPY schemas ./schemas
COPY --from=build /app/dist ./dist
# The embedded default (PGlite, DATABASE_URL=.data/db) writes under /app/.data: the only writable path
# besides /tmp. The code itself stays owned by root (read-only for the app user).
RUN mkdir -p /app/.data && chown 1000:1000 /app/.data
# The "node" user of the base image, by number so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "--v8-pool-size=1", "--max-semi-space-size=32", "bin/taskflow.js"]
CMD ["up"]
