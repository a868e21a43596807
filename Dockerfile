# The meshauth CLI (`meshauth ca ...`, `meshauth agent ...`) as a container image, for the
# manifests in examples/kubernetes/:
#   docker build -t ghcr.io/meshauth/meshauth:0.1.0 .
# Node 24 (LTS): Node 20, the floor the package supports, is past its end of life.
# Build: the JavaScript of dist/ from the sources (no type declarations needed at run time).
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY mod.ts tsconfig.json tsconfig.build.json ./
COPY lib lib
COPY internal internal
COPY ca-server ca-server
COPY agent agent
COPY cli cli
COPY scripts/build.mjs scripts/build.mjs
COPY tests/workerd/node-globals.mjs tests/workerd/node-globals.mjs
# The image runs the CA and the agent on Kubernetes, so it takes the optional peers too:
# @kubernetes/client-node (both) and @grpc/grpc-js (the agent's CSI node plugin).
RUN node scripts/build.mjs --skip-types \
  && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
  && npm install --no-save --omit=dev --ignore-scripts --no-audit --no-fund \
    "@kubernetes/client-node@$(node -p 'require("./package.json").peerDependencies["@kubernetes/client-node"]')" \
    "@grpc/grpc-js@$(node -p 'require("./package.json").peerDependencies["@grpc/grpc-js"]')"

# Run: Node, the built CLI and its production dependencies; no compiler, no npm cache.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /opt/meshauth
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
# A fixed non-root user, as the manifests' securityContext expects (runAsUser 10001).
RUN groupadd --system --gid 10001 meshauth && useradd --system --uid 10001 --gid meshauth --no-create-home meshauth
USER 10001:10001
ENTRYPOINT ["node", "/opt/meshauth/dist/cli.js"]
CMD ["--help"]
