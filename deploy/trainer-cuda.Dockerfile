# syntax=docker/dockerfile:1
# The trainer image for NVIDIA GPU nodes. Debian's libtorch is CPU-only, so
# this one takes PyTorch's CUDA build of the same libtorch version the CPU
# image uses (1.13.1: gotchsetup's patches target it) and tells gotchsetup
# so (HOMEMOLE_TORCH=cuda, LIBTORCH, CUDA_HOME).
#
# NOT BUILT OR RUN by any test or CI here: no Docker daemon and no GPU are
# available. deploy/README.md says what was checked instead.
#
#   docker build -f deploy/trainer-cuda.Dockerfile -t ghcr.io/homemole/trainer-cuda:dev .

ARG GO_VERSION=1.26.8
# CUDA 11.7 is the newest toolkit libtorch 1.13.1 was built for; the node's
# driver must support it (any driver >= 515).
ARG CUDA_IMAGE=nvidia/cuda:11.7.1-cudnn8-devel-ubuntu22.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:11.7.1-cudnn8-runtime-ubuntu22.04
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu117/libtorch-cxx11-abi-shared-with-deps-1.13.1%2Bcu117.zip

FROM golang:${GO_VERSION}-bookworm AS go

FROM ${CUDA_IMAGE} AS build
ARG LIBTORCH_URL
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends g++ curl unzip ca-certificates git \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL -o /tmp/libtorch.zip "$LIBTORCH_URL" && unzip -q /tmp/libtorch.zip -d /opt && rm /tmp/libtorch.zip
COPY --from=go /usr/local/go /usr/local/go
ENV PATH=/usr/local/go/bin:$PATH \
    HOMEMOLE_TORCH=cuda LIBTORCH=/opt/libtorch CUDA_HOME=/usr/local/cuda \
    LD_LIBRARY_PATH=/opt/libtorch/lib
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go run ./tools/gotchsetup
# homemole is the full CLI with -tags torch: the image has libtorch, so one
# binary runs every command itself, features included, instead of a front
# handing commands to homemole-full and that to homemole-torch.
RUN go build -tags torch -trimpath -o /out/homemole ./services/homemole/full \
 && go build -tags torch -trimpath -o /out/ ./services/trainer ./services/detector

FROM ${CUDA_RUNTIME_IMAGE}
COPY --from=build /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build /out/homemole /out/trainer /out/detector /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/libtorch/lib HOMEMOLE_HOME=/tmp/homemole
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/homemole"]
