# Sourced by the environment scripts (env.sh, env310.sh, label_studio.sh): one line per install
# step on stderr, the installer's output in a log, and that log's tail when a step fails.

step_in() {  # step_in LOG LABEL "what the user sees" command...
    local log="$1" label="$2" what="$3" began=$SECONDS
    shift 3
    printf '== %s%s ... ' "${label:+[$label] }" "$what" >&2
    if "$@" >>"$log" 2>&1; then
        echo "done ($((SECONDS - began)) s)" >&2
    else
        echo "FAILED" >&2
        echo "-- last lines of $log:" >&2
        grep -v "^WARNING: Location .* is ignored" "$log" | tail -n 30 >&2
        exit 1
    fi
}
