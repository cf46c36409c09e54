# What each measuring mode of scripts/overhead.sh and scripts/instructions.sh
# turns on in the server. Sourced, not run.
#
#   off      --log-level off, no export
#   logs     JSON logs as shipped
#   export   logs + OTLP export of every span to the sink on SINK_PORT
#   sampled  the same with parent-based ratio sampling at SAMPLE_RATIO
#            (default 0.01), as docs/observability.md advises a busy server

# `env` options that keep the caller's own OTEL_* settings out of the server.
MODE_UNSET=(-u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_TRACES_SAMPLER -u OTEL_TRACES_SAMPLER_ARG)

# mode_setup MODE SINK_PORT: sets mode_flags (server flags) and mode_env
# (environment assignments for `env`); returns 2 for an unknown mode.
mode_setup() {
  mode_flags=()
  mode_env=()
  case $1 in
    off) mode_flags=(--log-level off) ;;
    logs) ;;
    export) mode_flags=(--otlp-endpoint "http://127.0.0.1:$2") ;;
    sampled)
      mode_flags=(--otlp-endpoint "http://127.0.0.1:$2")
      mode_env=(OTEL_TRACES_SAMPLER=parentbased_traceidratio "OTEL_TRACES_SAMPLER_ARG=${SAMPLE_RATIO:-0.01}")
      ;;
    *) return 2 ;;
  esac
}
