#!/bin/sh
# dmnc guest agent: executes the host's requests arriving on its stdin (the serial port ttyS1, respawned by init).
# Host side and protocol description: tests/lab/qemu_guest.py. Requests, fields separated by one space:
#   hello NONCE                    -> "NONCE ready BOOT_ID"
#   run NONCE TIMEOUT LENGTH       -> LENGTH bytes of base64 lines follow: a script run with sh, stdin /dev/null,
#                                     stdout+stderr captured, killed (SIGKILL) after TIMEOUT seconds
#   put NONCE MODE PATH64 LENGTH   -> LENGTH bytes of base64 lines follow: data written to the base64-decoded path
#                                     (via a temporary file), then chmod MODE
# run and put answer "NONCE begin", the captured output as base64 lines, then "NONCE end EXIT_CODE".
# Unknown requests answer "NONCE error unknown-request". Nothing else is ever written to the port.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
# Canonical mode, so that every read() returns at most one line whatever buffering a reader uses (lines stay short:
# the host wraps payloads at 76 columns); no echo of the requests, no CR/LF translation, no signal characters.
stty icanon -echo -icrnl -inlcr -igncr -ixon -ixoff -isig -iexten -opost
boot_id="$(cat /proc/sys/kernel/random/boot_id)"
work=/run/dmnc-agent
mkdir -p "$work" /root
cd /root || exit 1

run_script() {
    # $1 timeout in seconds; the base64 script is in $work/received
    base64 -d < "$work/received" > "$work/script" || return 126
    # An absolute path: busybox (timeout) would run its own ash for a bare `sh`, and ash its own `ip` applet.
    timeout -s KILL "$1" /bin/sh "$work/script" </dev/null
}

receive() {
    # $1 number of payload bytes (base64 lines) that follow the request line on stdin
    head -c "$1" > "$work/received"
}

put_file() {
    # $1 octal mode, $2 base64 path; the data is in $work/received
    target="$(printf '%s' "$2" | base64 -d)" || return 126
    base64 -d < "$work/received" > "$target.dmnc-put" \
        && chmod "$1" "$target.dmnc-put" \
        && mv "$target.dmnc-put" "$target"
}

answer() {
    # $1 nonce, then the command and its arguments; output goes to a fresh file per request, so a daemon started
    # by an earlier request that still holds its output file open cannot write into this answer.
    nonce="$1"
    shift
    output="$work/output.$nonce"
    "$@" >"$output" 2>&1
    code=$?
    printf '%s begin\n' "$nonce"
    base64 < "$output"
    printf '%s end %s\n' "$nonce" "$code"
    rm -f "$output"
}

while IFS=' ' read -r verb nonce first second third; do
    case "$verb" in
        hello) printf '%s ready %s\n' "$nonce" "$boot_id" ;;
        run)
            receive "$second"
            answer "$nonce" run_script "$first"
            ;;
        put)
            receive "$third"
            answer "$nonce" put_file "$first" "$second"
            ;;
        "") ;;
        *) printf '%s error unknown-request\n' "$nonce" ;;
    esac
done
