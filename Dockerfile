# The course in a container. It shares the host's kernel, so it must run
# privileged, and kernel headers are prepared for *that* kernel at start.
#
#   docker build --build-arg BASE=debian:bookworm -t ebpf-course .
#   docker run --rm -it --privileged --pid=host -p 127.0.0.1:8888:8888 \
#       -v ebpf-tutor-cache:/var/cache/ebpf-tutor ebpf-course
#
# BASE is an argument because some build machines cannot reach Docker Hub:
# there, import a debootstrapped Debian as a local image and pass its name.
ARG BASE=debian:bookworm
# hadolint ignore=DL3006
FROM ${BASE}

# PEM text of extra CA certificates, for build machines behind a TLS-inspecting proxy.
ARG EXTRA_CA_CERTS=""
ENV DEBIAN_FRONTEND=noninteractive \
    EBPF_TUTOR_VENV=/opt/ebpf-course/.venv \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /opt/ebpf-course
COPY . /opt/ebpf-course
# The same provisioning path as everywhere else; the image part only
# (packages, venv, Jupyter kernel). Mounts and headers need the running kernel.
# Versions are pinned by the distribution release (BASE) and requirements.txt.
# hadolint ignore=DL3008
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends bash ca-certificates \
 && if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/extra.crt; fi \
 && update-ca-certificates \
 && bash scripts/provision.sh --image \
 && rm -rf /var/lib/apt/lists/*

EXPOSE 8888
# At start: mounts and headers for the host kernel, the learner's work folder
# (./work: mount a volume there to keep it), then JupyterLab on chapter 1. Inside the
# container it listens on all its interfaces; publish it on 127.0.0.1 only.
CMD ["bash", "-c", "scripts/provision.sh --runtime && work=$(.venv/bin/ebpf-tutor work --print-path) && exec .venv/bin/jupyter lab --ip=0.0.0.0 --port=8888 --no-browser --allow-root --ServerApp.root_dir=\"$work\" --LabApp.default_url=/lab/tree/notebooks/ch01_introduction.ipynb"]
