# shellcheck shell=bash
# The "baseline" system of Benchmarks/compare/run (sourced by it): the vswitchd of
# --baseline-bin-dir (BASE_VSWITCHD), set up and measured exactly like systems/vswitch.sh.
# shellcheck disable=SC2034 # the local VSWITCHD is what vswitch_setup runs

# The baseline build, run and read exactly like vswitch (its control protocol is the same).
baseline_setup() { local VSWITCHD=$BASE_VSWITCHD; vswitch_setup "$@"; }
baseline_snap0() { vswitch_snap0 "$@"; }
baseline_snap1() { vswitch_snap1 "$@"; }
baseline_figures() { vswitch_figures "$@"; }
baseline_teardown() { vswitch_teardown "$@"; }
