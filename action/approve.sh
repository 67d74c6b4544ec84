#!/usr/bin/env bash
# greenlight's GitHub Action, as a plain script: ask a greenlight server for an approval and wait
# for the decision. action.yml maps the action's inputs to the INPUT_* variables below; the script
# runs the same anywhere (another CI, a terminal) given those variables.
#
#   INPUT_SERVER_URL       greenlight base URL (required)
#   INPUT_TOKEN            API key with the request and read scopes (required with auth token)
#   INPUT_AUTH             token (INPUT_TOKEN) or oidc (the job's GitHub OIDC token) [token]
#   INPUT_AUDIENCE         with oidc: the audience asked of GitHub [greenlight]
#   INPUT_WORKFLOW         workflow name (optional when the server has one workflow)
#   INPUT_TITLE            what is being approved (required)
#   INPUT_DETAILS          more text under the title
#   INPUT_PARAMS           key=value lines; blank lines and # comments are skipped
#   INPUT_TIMEOUT          how long to wait: 90s, 30m, 1h30m, 2d or seconds [30m]
#   INPUT_FAIL_ON_DENIAL   true: denied/expired/cancelled fail the step [true]
#   INPUT_EXPIRES_IN       the request's own expiry (server/workflow default when empty)
#   INPUT_REQUESTER        who asks (a Slack user id shows as a mention)
#   INPUT_IDEMPOTENCY_KEY  overrides the key derived from the GitHub run
#   GREENLIGHT_CLIENT      auto (curl+jq, else the greenlight CLI), curl or cli [auto]
#   GREENLIGHT_POLL_WAIT   seconds per long-poll, at most 120 [50]
#
# Outputs (to $GITHUB_OUTPUT when set): approval-status (approved, denied, expired, cancelled,
# timeout; empty after an error), approver (the request's decided_by), reason, request-id.
#
# Exit codes, the same as `greenlight ask --wait`: 0 approved; 1 denied; 3 expired or cancelled
# (1 and 3 become 0 when INPUT_FAIL_ON_DENIAL is false); 4 no decision within the timeout
# (always: a pipeline must not go on without a decision); 2 bad input (here or refused by the
# server); 5 any other failure (bad key, unexpected answer); 130/143 interrupted (the request is
# cancelled first).
#
# Needs bash 3.2+ and curl + jq, or the greenlight CLI on PATH. Works on jq 1.6 and 1.7 alike:
# jq never parses a number param (1.6 rounds big integers, 1.7 keeps "1.10" as written).

set -euo pipefail

readonly MAX_WAIT=120 # the server's longest long-poll
readonly POLL_WAIT_DEFAULT=50 # under the 60 s idle timeout of common proxies (nginx, ALB)

tmp=""
child_pid=""
sleep_pid=""
request_id=""
base_url=""
interrupted=""

# --- logging and GitHub workflow commands ----------------------------------------------------

on_github() { [[ "${GITHUB_ACTIONS:-}" == "true" ]]; }

# A workflow command's message may not contain a raw newline (it would end the command and let
# the rest of the text, which may come from an approver, be read as another command).
escape_data() {
  local s=$1 pct='%' cr=$'\r' nl=$'\n'
  s=${s//"$pct"/%25}
  s=${s//"$cr"/%0D}
  s=${s//"$nl"/%0A}
  printf '%s' "$s"
}

# annotate LEVEL MESSAGE: an ::error::/::warning::/::notice:: annotation on GitHub, a line on
# stderr elsewhere (printing workflow commands outside GitHub would only clutter the log).
annotate() {
  if on_github; then
    printf '::%s title=greenlight::%s\n' "$1" "$(escape_data "$2")"
  else
    printf 'greenlight: %s: %s\n' "$1" "$2" >&2
  fi
}

# A log line; line breaks in it (a title, a server message) are shown as \n, so that no part of
# it can start a line of its own and be read as a workflow command.
log() {
  local s="$*" cr=$'\r' nl=$'\n'
  s=${s//"$cr"/\\r}
  s=${s//"$nl"/\\n}
  printf 'greenlight: %s\n' "$s"
}

random_hex() {
  local hex
  hex=$(od -An -N16 -tx1 /dev/urandom 2>/dev/null | tr -d ' \n') || hex=""
  [[ -n "$hex" ]] || hex="${RANDOM}${RANDOM}${RANDOM}${RANDOM}$$"
  printf '%s' "$hex"
}

# set_output NAME VALUE, in the delimiter form (any value may span lines, e.g. a reason), with a
# random delimiter that the value does not contain, as actions/toolkit does.
set_output() {
  local name=$1 value=$2 delim
  if [[ -z "${GITHUB_OUTPUT:-}" ]]; then
    return 0
  fi
  while :; do
    delim="ghadelimiter_$(random_hex)"
    [[ "$value" != *"$delim"* ]] && break
  done
  printf '%s<<%s\n%s\n%s\n' "$name" "$delim" "$value" "$delim" >>"$GITHUB_OUTPUT"
}

# Markdown table cell: no line breaks, pipes or HTML from the request's text.
md_cell() {
  local s=$1 amp='&' lt='<' gt='>' pipe='|' nl=$'\n' cr=$'\r'
  s=${s//"$amp"/&amp;}
  s=${s//"$lt"/&lt;}
  s=${s//"$gt"/&gt;}
  s=${s//"$pipe"/\\|}
  s=${s//"$cr"/}
  s=${s//"$nl"/<br>}
  printf '%s' "$s"
}

write_summary() {
  local status=$1 approver=$2 reason=$3 headline
  if [[ -z "${GITHUB_STEP_SUMMARY:-}" ]]; then
    return 0
  fi
  case "$status" in
    approved) headline="✅ Approved" ;;
    denied) headline="❌ Denied" ;;
    expired) headline="⌛ Expired" ;;
    cancelled) headline="🚫 Cancelled" ;;
    timeout) headline="⏱️ No decision within ${timeout_text}" ;;
    *) headline="⚠️ Failed" ;;
  esac
  {
    printf '### greenlight: %s\n\n' "$headline"
    printf '| | |\n|---|---|\n'
    printf '| Title | %s |\n' "$(md_cell "$title")"
    [[ -n "$workflow" ]] && printf '| Workflow | %s |\n' "$(md_cell "$workflow")"
    [[ -n "$request_id" ]] && printf '| Request | %s |\n' "\`$(md_cell "$request_id")\`"
    [[ -n "$approver" ]] && printf '| Decided by | %s |\n' "$(md_cell "$approver")"
    [[ -n "$reason" ]] && printf '| Reason | %s |\n' "$(md_cell "$reason")"
    printf '\n'
  } >>"$GITHUB_STEP_SUMMARY"
}

# finish CODE STATUS APPROVER REASON: every way out goes through here, outputs first.
finish() {
  local code=$1 status=$2 approver=$3 reason=$4
  set_output approval-status "$status"
  set_output approver "$approver"
  set_output reason "$reason"
  set_output request-id "$request_id"
  write_summary "$status" "$approver" "$reason" || true
  exit "$code"
}

# fail CODE MESSAGE: an error before or without a decision; no output claims an outcome.
fail() {
  annotate error "$2"
  finish "$1" "" "" ""
}

# The running curl (or greenlight CLI) and sleep, if any; they may be gone already.
# shellcheck disable=SC2317 # called from traps
stop_children() {
  local pid
  for pid in "$child_pid" "$sleep_pid"; do
    if [[ -n "$pid" ]]; then
      kill "$pid" 2>/dev/null || true
    fi
  done
}

# shellcheck disable=SC2317 # called from traps
cleanup() {
  stop_children
  [[ -n "$tmp" ]] && rm -rf "$tmp"
  return 0
}
trap cleanup EXIT

# --- inputs ----------------------------------------------------------------------------------

trim() {
  local s=$1
  s="${s#"${s%%[![:space:]]*}"}"
  s="${s%"${s##*[![:space:]]}"}"
  printf '%s' "$s"
}

# Seconds in a duration: 45, 90s, 30m, 1h30m, 2d (the server's expires_in grammar).
duration_seconds() {
  local text=$1 total=0 n unit
  if [[ "$text" =~ ^[0-9]+$ ]]; then
    printf '%s' "$((10#$text))"
    return 0
  fi
  [[ "$text" =~ ^([0-9]+[smhd])+$ ]] || return 1
  while [[ -n "$text" ]]; do
    [[ "$text" =~ ^([0-9]+)([smhd])(.*)$ ]] || return 1
    n=$((10#${BASH_REMATCH[1]}))
    unit=${BASH_REMATCH[2]}
    text=${BASH_REMATCH[3]}
    case "$unit" in
      s) total=$((total + n)) ;;
      m) total=$((total + n * 60)) ;;
      h) total=$((total + n * 3600)) ;;
      d) total=$((total + n * 86400)) ;;
    esac
  done
  printf '%s' "$total"
}

human_duration() {
  local s=$1 out=""
  if ((s >= 3600)); then out="${out}$((s / 3600))h"; s=$((s % 3600)); fi
  if ((s >= 60)); then out="${out}$((s / 60))m"; s=$((s % 60)); fi
  if ((s > 0)) || [[ -z "$out" ]]; then out="${out}${s}s"; fi
  printf '%s' "$out"
}

server_url=$(trim "${INPUT_SERVER_URL:-}")
token=$(trim "${INPUT_TOKEN:-}")
auth=$(trim "${INPUT_AUTH:-}")
[[ -n "$auth" ]] || auth=token
audience=$(trim "${INPUT_AUDIENCE:-}")
[[ -n "$audience" ]] || audience=greenlight
workflow=$(trim "${INPUT_WORKFLOW:-}")
title=$(trim "${INPUT_TITLE:-}")
details=${INPUT_DETAILS:-}
params_text=${INPUT_PARAMS:-}
timeout_text=$(trim "${INPUT_TIMEOUT:-}")
[[ -n "$timeout_text" ]] || timeout_text=30m
fail_on_denial_text=$(trim "${INPUT_FAIL_ON_DENIAL:-}")
[[ -n "$fail_on_denial_text" ]] || fail_on_denial_text=true
expires_in=$(trim "${INPUT_EXPIRES_IN:-}")
requester=$(trim "${INPUT_REQUESTER:-}")
idempotency_key=$(trim "${INPUT_IDEMPOTENCY_KEY:-}")
client=$(trim "${GREENLIGHT_CLIENT:-auto}")
poll_wait=$(trim "${GREENLIGHT_POLL_WAIT:-$POLL_WAIT_DEFAULT}")

# Mask the key before anything else can print it.
if [[ -n "$token" ]] && on_github; then
  printf '::add-mask::%s\n' "$token"
fi

[[ -n "$server_url" ]] || fail 2 "the server-url input is required (the greenlight base URL, e.g. https://greenlight.example.com)"
[[ "$server_url" =~ ^https?://[^[:space:]]+$ ]] || fail 2 "server-url must be an http:// or https:// URL, got \"$server_url\""
base_url=${server_url%/}
case "$auth" in
  token)
    [[ -n "$token" ]] || fail 2 "the token input is required (a greenlight API key with the request and read scopes; pass it from a secret), or set auth: oidc"
    [[ "$token" != *[[:space:]]* ]] || fail 2 "the token input contains whitespace; is it the key alone?"
    ;;
  oidc)
    [[ -n "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" && -n "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]] \
      || fail 2 "auth oidc needs the job's OIDC token: give the workflow or job \`permissions: id-token: write\`"
    [[ "$audience" =~ ^[A-Za-z0-9._:/-]+$ ]] || fail 2 "audience may hold letters, digits and . _ : / - only, got \"$audience\""
    ;;
  *) fail 2 "auth must be token or oidc, got \"$auth\"" ;;
esac
[[ -n "$title" ]] || fail 2 "the title input is required"
timeout_s=$(duration_seconds "$timeout_text") || fail 2 "timeout must be a duration like 90s, 30m, 1h30m, 2d or a number of seconds, got \"$timeout_text\""
((timeout_s > 0)) || fail 2 "timeout must be greater than zero"
case "$fail_on_denial_text" in
  true | True | TRUE) fail_on_denial=true ;;
  false | False | FALSE) fail_on_denial=false ;;
  *) fail 2 "fail-on-denial must be true or false, got \"$fail_on_denial_text\"" ;;
esac
if ! [[ "$poll_wait" =~ ^[0-9]+$ ]] || ((poll_wait < 1)); then
  fail 2 "GREENLIGHT_POLL_WAIT must be a number of seconds, got \"$poll_wait\""
fi
((poll_wait <= MAX_WAIT)) || poll_wait=$MAX_WAIT

# params: "key=value" lines -> parallel arrays of keys and values (last one wins, as with
# repeated `greenlight ask --param`).
param_keys=()
param_values=()
line_no=0
while IFS= read -r line || [[ -n "$line" ]]; do
  line_no=$((line_no + 1))
  line=$(trim "${line%$'\r'}")
  [[ -z "$line" || "$line" == \#* ]] && continue
  [[ "$line" == *=* ]] || fail 2 "params line $line_no is not key=value: \"$line\""
  key=$(trim "${line%%=*}")
  value=$(trim "${line#*=}")
  [[ -n "$key" ]] || fail 2 "params line $line_no has an empty key: \"$line\""
  i=0
  n=${#param_keys[@]}
  while ((i < n)); do
    if [[ "${param_keys[$i]}" == "$key" ]]; then
      param_values[i]=$value
      continue 2
    fi
    i=$((i + 1))
  done
  param_keys+=("$key")
  param_values+=("$value")
done <<<"$params_text"

# Whether a param value goes out as a JSON number/boolean rather than a string: the rule of
# `greenlight ask --param`: true/false, or a JSON number that serde_json prints back exactly as
# written. Integers within 64 bits ("-5", "12345678901234567890"); other numbers in serde_json's
# shortest round-trip form ("0.25", "2.0", "1e-7", "1e+16"); not "1.10", "007", "+1", "1e3".
# shellcheck disable=SC2071 # string comparison of equal-length digit strings, on purpose
is_json_scalar() {
  local v=$1 digits
  case "$v" in
    true | false) return 0 ;;
  esac
  if [[ "$v" =~ ^-?(0|[1-9][0-9]*)$ ]]; then
    [[ "$v" == "-0" ]] && return 1
    digits=${v#-}
    # Same length, so comparing as strings compares the numbers.
    if [[ "$v" == -* ]]; then
      ((${#digits} < 19)) && return 0
      ((${#digits} == 19)) && [[ ! "$digits" > "9223372036854775808" ]] && return 0
      return 1
    fi
    ((${#digits} < 20)) && return 0
    ((${#digits} == 20)) && [[ ! "$digits" > "18446744073709551615" ]] && return 0
    return 1
  fi
  [[ "$v" =~ ^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$ ]] || return 1
  [[ "$(serde_float_text "$v")" == "$v" ]]
}

# How serde_json writes the double nearest to $1: the shortest digits that read back as the same
# double, as "0.25", "2.0", "1000000000000000.0", "0.00001", and past those ranges "1e-6",
# "1.5e+300". awk's numbers are doubles; its "%.Ne" finds the digits.
serde_float_text() {
  LC_ALL=C awk -v text="$1" 'BEGIN {
    sign = ""
    if (substr(text, 1, 1) == "-") { sign = "-"; text = substr(text, 2) }
    x = text + 0
    if (x - x != 0) { print "inf"; exit }  # out of range: serde_json refuses it
    if (x == 0) { print sign "0.0"; exit }
    for (p = 0; p <= 16; p++) { t = sprintf("%." p "e", x); if (t + 0 == x) break }
    if (t !~ /^[0-9]/) { print "inf"; exit }
    split(t, parts, "e")
    digits = parts[1]; sub(/\./, "", digits); sub(/0+$/, "", digits)
    if (digits == "") digits = "0"
    n = length(digits)
    kk = parts[2] + 1          # where the decimal point goes in the digits
    k = kk - n                 # the exponent of the last digit
    if (k >= 0 && kk <= 16) {
      out = digits; for (i = 0; i < k; i++) out = out "0"; out = out ".0"
    } else if (kk > 0 && kk <= 16) {
      out = substr(digits, 1, kk) "." substr(digits, kk + 1)
    } else if (kk > -5 && kk <= 0) {
      out = "0."; for (i = 0; i < -kk; i++) out = out "0"; out = out digits
    } else {
      e = kk - 1
      out = substr(digits, 1, 1)
      if (n > 1) out = out "." substr(digits, 2)
      out = out "e" (e >= 0 ? "+" e : e)
    }
    print sign out
  }'
}

# --- the idempotency key -----------------------------------------------------------------------

sha256_hex() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 | cut -d' ' -f1
  elif command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha256 -r | cut -d' ' -f1
  else
    cksum | tr ' ' '-'
  fi
}

# From the run, the attempt, the job (and matrix leg), the step and everything the request
# says: the same step re-run in the same attempt finds its request again instead of posting a
# second message; a new attempt ("Re-run jobs") or a changed request asks afresh.
if [[ -z "$idempotency_key" && -n "${GITHUB_RUN_ID:-}" ]]; then
  fingerprint=$(
    printf '%s\n' "${GITHUB_REPOSITORY:-}" "${GITHUB_WORKFLOW_REF:-${GITHUB_WORKFLOW:-}}" \
      "${GITHUB_JOB:-}" "${GREENLIGHT_JOB_INDEX:-}" "${GITHUB_ACTION:-}" \
      "$workflow" "$title" "$details" "$expires_in" "$requester"
    i=0
    while ((i < ${#param_keys[@]})); do
      printf '%s=%s\n' "${param_keys[$i]}" "${param_values[$i]}"
      i=$((i + 1))
    done
  )
  digest=$(printf '%s' "$fingerprint" | sha256_hex)
  idempotency_key="gha-${GITHUB_RUN_ID}-${GITHUB_RUN_ATTEMPT:-1}-${digest:0:32}"
fi

# --- which client ------------------------------------------------------------------------------

have() { command -v "$1" >/dev/null 2>&1; }

case "$client" in
  auto)
    if have curl && have jq; then
      client=curl
    elif have greenlight; then
      client=cli
    else
      fail 5 "this step needs curl and jq, or the greenlight CLI, on PATH"
    fi
    ;;
  curl)
    if ! have curl || ! have jq; then
      fail 5 "GREENLIGHT_CLIENT=curl needs curl and jq on PATH"
    fi
    ;;
  cli)
    have greenlight || fail 5 "GREENLIGHT_CLIENT=cli needs the greenlight CLI on PATH"
    ;;
  *) fail 2 "GREENLIGHT_CLIENT must be auto, curl or cli, got \"$client\"" ;;
esac

tmp=$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/greenlight.XXXXXX")
started=$(date +%s)
deadline=$((started + timeout_s))

# An outcome the server reported: outputs, a line in the log, the exit code.
conclude() {
  local status=$1 approver=$2 reason=$3 code=0 level=notice what
  what="$status"
  [[ -n "$approver" ]] && what="$what by $approver"
  [[ -n "$reason" ]] && what="$what: $reason"
  case "$status" in
    approved) code=0 ;;
    denied) code=1 ;;
    expired | cancelled) code=3 ;;
    *)
      annotate error "unexpected request status \"$status\" for $request_id"
      finish 5 "" "" ""
      ;;
  esac
  if ((code != 0)); then
    if [[ "$fail_on_denial" == true ]]; then
      level=error
    else
      level=warning
      code=0
    fi
  fi
  annotate "$level" "\"$title\" $what ($request_id)"
  finish "$code" "$status" "$approver" "$reason"
}

# --- the greenlight CLI ------------------------------------------------------------------------

# Used when curl or jq is missing (or GREENLIGHT_CLIENT=cli): `greenlight ask --wait` retries an
# unreachable server itself and maps outcomes to the same exit codes. It does not cancel the
# request when the timeout runs out.
run_cli() {
  local args=(ask --title "$title" --wait --timeout "${timeout_s}s") i=0 rc=0 out first rest
  [[ -n "$workflow" ]] && args+=(--workflow "$workflow")
  [[ -n "$details" ]] && args+=(--details "$details")
  [[ -n "$expires_in" ]] && args+=(--expires-in "$expires_in")
  [[ -n "$requester" ]] && args+=(--requester "$requester")
  [[ -n "$idempotency_key" ]] && args+=(--idempotency-key "$idempotency_key")
  while ((i < ${#param_keys[@]})); do
    args+=(--param "${param_keys[$i]}=${param_values[$i]}")
    i=$((i + 1))
  done
  have jq && args+=(--json)
  [[ "$auth" == oidc ]] && args+=(--oidc github --audience "$audience")
  log "asking $base_url with the greenlight CLI; waiting up to $timeout_text"
  GREENLIGHT_URL=$base_url GREENLIGHT_TOKEN=$token greenlight "${args[@]}" >"$tmp/cli.out" 2> >(tee "$tmp/cli.err" >&2) &
  child_pid=$!
  wait "$child_pid" || rc=$?
  child_pid=""
  if [[ -n "$interrupted" ]]; then
    return 0
  fi
  case "$rc" in
    0 | 1 | 3 | 4) ;;
    *)
      out=$(tr '\n' ' ' <"$tmp/cli.err")
      [[ -n "$out" ]] || out="greenlight ask exited with $rc"
      if ((rc == 2)); then fail 2 "$out"; else fail 5 "$out"; fi
      ;;
  esac
  if have jq; then
    request_id=$(jq -r '.id // empty' "$tmp/cli.out")
    status=$(jq -r '.status // empty' "$tmp/cli.out")
    approver=$(jq -r '.decided_by // empty' "$tmp/cli.out")
    reason=$(jq -r '.reason // empty' "$tmp/cli.out")
  else
    # Plain output: the id, then "<status> by <who>[: <reason>]" or "pending".
    request_id=$(sed -n 1p "$tmp/cli.out")
    first=$(sed -n 2p "$tmp/cli.out")
    rest=$(sed -n '3,$p' "$tmp/cli.out")
    status=${first%% *}
    approver=""
    reason=""
    if [[ "$first" == *" by "* ]]; then
      approver=${first#* by }
      if [[ "$approver" == *": "* ]]; then
        reason=${approver#*: }
        approver=${approver%%: *}
        [[ -n "$rest" ]] && reason="$reason"$'\n'"$rest"
      fi
    fi
  fi
  if ((rc == 4)) || [[ "$status" == pending ]]; then
    annotate error "no decision on \"$title\" within $timeout_text ($request_id is still pending)"
    finish 4 timeout "" ""
  fi
  conclude "$status" "$approver" "$reason"
}

# --- HTTP with curl ----------------------------------------------------------------------------

# The key goes to curl in a file, not on its command line (which other processes can read).
umask 077
printf 'Authorization: Bearer %s\n' "$token" >"$tmp/auth"

# With auth oidc: the job's OIDC token, asked of GitHub again before every call (it expires
# within minutes), masked before anything can print it, and kept in the same file.
oidc_token() {
  local sep='?' rc=0 value
  [[ "$ACTIONS_ID_TOKEN_REQUEST_URL" == *\?* ]] && sep='&'
  printf 'Authorization: bearer %s\n' "$ACTIONS_ID_TOKEN_REQUEST_TOKEN" >"$tmp/oidc-auth"
  curl -sS --connect-timeout 10 --max-time 30 -H "@$tmp/oidc-auth" \
    "${ACTIONS_ID_TOKEN_REQUEST_URL}${sep}audience=${audience}" >"$tmp/oidc.json" 2>"$tmp/curl.err" || rc=$?
  ((rc == 0)) || fail 5 "cannot get the job's OIDC token from GitHub: $(curl_error)"
  value=$(jq -r '.value // empty' "$tmp/oidc.json" 2>/dev/null) || value=""
  [[ -n "$value" ]] || fail 5 "GitHub gave no OIDC token; does the job have \`permissions: id-token: write\`?"
  on_github && printf '::add-mask::%s\n' "$value"
  printf 'Authorization: Bearer %s\n' "$value" >"$tmp/auth"
}

# request METHOD PATH MAX_SECONDS [BODY_FILE] [IDEMPOTENCY_KEY]: sets http_code (000 when curl
# failed), curl_rc and the body in $tmp/body. curl runs in the background (child_pid) so that a
# signal (a cancelled job) is handled at once, not after a long-poll.
request() {
  local method=$1 path=$2 max_time=$3 body_file=${4:-} key=${5:-}
  local args=(-sS -X "$method" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}'
    --connect-timeout 10 --max-time "$max_time"
    -H "@$tmp/auth" -H 'Accept: application/json' -H 'User-Agent: greenlight-action')
  if [[ -n "$body_file" ]]; then
    args+=(-H 'Content-Type: application/json' --data-binary "@$body_file")
  fi
  if [[ -n "$key" ]]; then
    args+=(-H "Idempotency-Key: $key")
  fi
  [[ "$auth" == oidc ]] && oidc_token
  : >"$tmp/body"
  : >"$tmp/headers"
  curl_rc=0
  curl "${args[@]}" "$base_url$path" >"$tmp/code" 2>"$tmp/curl.err" &
  child_pid=$!
  wait "$child_pid" || curl_rc=$?
  child_pid=""
  http_code=$(cat "$tmp/code" 2>/dev/null || true)
  [[ "$http_code" =~ ^[0-9]{3}$ ]] || http_code=000
  if ((curl_rc != 0)); then
    http_code=000
  fi
}

# The server's {"error":{"code","message"}}, or the start of whatever else came back.
error_text() {
  local text
  text=$(jq -r 'if (.error | type) == "object" then "\(.error.code // "error"): \(.error.message // "")" else empty end' "$tmp/body" 2>/dev/null) || text=""
  if [[ -z "$text" ]]; then
    text=$(head -c 300 "$tmp/body" | tr '\n\r' '  ')
  fi
  [[ -n "$text" ]] || text="(empty body)"
  printf '%s' "$text"
}

curl_error() { tr '\n' ' ' <"$tmp/curl.err" | sed 's/^curl: //; s/ *$//'; }

# Whether the last response is worth trying again: no connection, a timeout, 408, 429 and 5xx
# (a restarting server, a proxy in front of it).
transient() {
  case "$http_code" in
    000)
      # malformed URL, unsupported protocol, TLS certificate problems: retrying cannot help.
      case "$curl_rc" in 1 | 2 | 3 | 27 | 43 | 51 | 53 | 54 | 58 | 59 | 60 | 77 | 80 | 83 | 90 | 91) return 1 ;; esac
      return 0
      ;;
    408 | 429 | 5??) return 0 ;;
  esac
  return 1
}

retry_after() {
  local v
  v=$(sed -n 's/^[Rr][Ee][Tt][Rr][Yy]-[Aa][Ff][Tt][Ee][Rr]:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$tmp/headers" | tail -1)
  printf '%s' "${v:-0}"
}

pause() {
  sleep "$1" &
  sleep_pid=$!
  wait "$sleep_pid" || true
  sleep_pid=""
}

backoff=1
# After a transient failure: a line in the log, then a short sleep (never past the deadline).
# Returns 1 when there is no time left.
retry_pause() {
  local what=$1 now left delay ra
  now=$(date +%s)
  left=$((deadline - now))
  ((left > 0)) || return 1
  delay=$backoff
  ra=$(retry_after)
  ((ra > delay)) && delay=$ra
  ((delay > 30)) && delay=30
  ((delay > left)) && delay=$left
  if [[ "$http_code" == 000 ]]; then
    log "cannot reach $base_url while $what: $(curl_error); retrying in ${delay}s"
  else
    log "HTTP $http_code from $base_url while $what: $(error_text); retrying in ${delay}s"
  fi
  pause "$delay"
  backoff=$((backoff * 2))
  ((backoff > 5)) && backoff=5
  return 0
}

# A 4xx that retrying will not fix: a clear error naming the server's code and message.
refused() {
  local what=$1 hint=""
  case "$http_code" in
    401)
      if [[ "$auth" == oidc ]]; then
        hint=" (does a [[trust]] policy on the server accept this job's token, with audience $audience?)"
      else
        hint=" (is the token input a valid, unrevoked greenlight API key?)"
      fi
      ;;
    403) hint=" (the API key needs the request and read scopes)" ;;
    404) hint=" (is server-url the greenlight server's base URL?)" ;;
  esac
  case "$http_code" in
    401 | 403 | 404) fail 5 "greenlight refused $what: HTTP $http_code $(error_text)$hint" ;;
    4??) fail 2 "greenlight refused $what: HTTP $http_code $(error_text)" ;;
    000) fail 5 "cannot reach $base_url while $what: $(curl_error)" ;;
    *) fail 5 "unexpected HTTP $http_code from greenlight while $what: $(error_text)" ;;
  esac
}

# Reads the request in $tmp/body into status/approver/reason (and request_id).
read_request() {
  local id
  if ! jq -e 'type == "object" and (.status | type) == "string"' "$tmp/body" >/dev/null 2>&1; then
    fail 5 "greenlight answered HTTP $http_code with something that is not a request: $(error_text)"
  fi
  id=$(jq -r '.id // empty' "$tmp/body")
  [[ -n "$id" ]] && request_id=$id
  status=$(jq -r '.status' "$tmp/body")
  approver=$(jq -r '.decided_by // empty | tostring' "$tmp/body")
  reason=$(jq -r '.reason // empty | tostring' "$tmp/body")
}

# On a cancelled job (SIGINT, then SIGTERM from the runner): cancel the request so nobody
# approves what no longer waits, write the outputs, stop.
# shellcheck disable=SC2317 # called from traps
on_signal() {
  local code=$1 status="" approver="" reason=""
  interrupted=1
  trap - INT TERM
  stop_children
  child_pid=""
  sleep_pid=""
  if [[ "$client" == curl && -n "$request_id" ]]; then
    jq -n '{reason: "the CI job was cancelled"}' >"$tmp/cancel.json"
    request POST "/v1/requests/$request_id/cancel" 10 "$tmp/cancel.json"
    if [[ "$http_code" == 200 ]]; then
      read_request
      log "interrupted; cancelled $request_id"
    else
      log "interrupted; could not cancel $request_id (HTTP $http_code)"
    fi
  fi
  annotate error "interrupted while waiting for a decision on \"$title\""
  finish "$code" "$status" "$approver" "$reason"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

if [[ "$client" == cli ]]; then
  run_cli
fi

# --- create the request ------------------------------------------------------------------------

# Every string is encoded by jq; number and boolean params are spliced in as written (see the
# header: jq must not parse them).
encoded=()
if ((${#param_keys[@]} > 0)); then
  args=()
  i=0
  while ((i < ${#param_keys[@]})); do
    args+=("${param_keys[$i]}" "${param_values[$i]}")
    i=$((i + 1))
  done
  while IFS= read -r line; do
    encoded+=("$line")
  done < <(jq -nr '$ARGS.positional[] | tojson' --args "${args[@]}")
  ((${#encoded[@]} == 2 * ${#param_keys[@]})) || fail 5 "could not encode the params with jq"
fi
params_json="{"
i=0
while ((i < ${#param_keys[@]})); do
  ((i > 0)) && params_json="$params_json,"
  value_json=${encoded[$((2 * i + 1))]}
  if is_json_scalar "${param_values[$i]}"; then
    value_json=${param_values[$i]}
  fi
  params_json="$params_json${encoded[$((2 * i))]}:$value_json"
  i=$((i + 1))
done
params_json="$params_json}"
fields=$(jq -cn --arg workflow "$workflow" --arg title "$title" --arg details "$details" \
  --arg expires_in "$expires_in" --arg requester "$requester" '
  {title: $title}
  + (if $workflow != "" then {workflow: $workflow} else {} end)
  + (if $details != "" then {details: $details} else {} end)
  + (if $requester != "" then {requester: $requester} else {} end)
  + (if $expires_in != "" then {expires_in: $expires_in} else {} end)')
printf '%s,"params":%s}' "${fields%\}}" "$params_json" >"$tmp/request.json"
jq -e 'type == "object"' "$tmp/request.json" >/dev/null || fail 5 "could not build the request body"

log "asking $base_url for approval of \"$title\"${workflow:+ (workflow $workflow)}"
while :; do
  request POST /v1/requests 30 "$tmp/request.json" "$idempotency_key"
  case "$http_code" in
    200 | 201) break ;;
  esac
  if transient; then
    # Without an idempotency key a retry could post a second message: only retry when the
    # request cannot have arrived (no connection at all) or the server said it is unavailable.
    if [[ -z "$idempotency_key" ]] && ! [[ "$curl_rc" == 6 || "$curl_rc" == 7 || "$http_code" == 503 || "$http_code" == 429 ]]; then
      refused "the request"
    fi
    retry_pause "creating the request" || {
      annotate error "could not create the request within $timeout_text"
      finish 4 timeout "" ""
    }
    continue
  fi
  refused "the request"
done
backoff=1
read_request
if [[ "$http_code" == 200 ]]; then
  log "found $request_id again (same idempotency key): $status"
else
  channel=$(jq -r '.channel // empty | tostring' "$tmp/body")
  log "created $request_id${channel:+ in $channel}; waiting up to $timeout_text for a decision in Slack"
fi

# --- wait for the decision ---------------------------------------------------------------------

while [[ "$status" == pending ]]; do
  now=$(date +%s)
  left=$((deadline - now))
  ((left > 0)) || break
  wait_s=$poll_wait
  ((wait_s > left)) && wait_s=$left
  request GET "/v1/requests/$request_id?wait=$wait_s" $((wait_s + 30))
  if [[ "$http_code" == 200 ]]; then
    backoff=1
    read_request
    if [[ "$status" == pending ]]; then
      now=$(date +%s)
      left=$((deadline - now))
      ((left > 0)) && log "still pending; $(human_duration "$left") left"
    fi
    continue
  fi
  if transient; then
    retry_pause "waiting for $request_id" || break
    continue
  fi
  refused "reading $request_id"
done

if [[ "$status" != pending ]]; then
  conclude "$status" "$approver" "$reason"
fi

# Out of time. Cancel the request so a late click cannot approve what no longer waits; when it
# was decided in the meantime, that decision is the outcome after all.
jq -n --arg t "$timeout_text" '{reason: "no decision within \($t); the CI job stopped waiting"}' >"$tmp/cancel.json"
request POST "/v1/requests/$request_id/cancel" 15 "$tmp/cancel.json"
case "$http_code" in
  200) log "cancelled $request_id" ;;
  409)
    request GET "/v1/requests/$request_id" 15
    if [[ "$http_code" == 200 ]]; then
      read_request
      [[ "$status" != pending ]] && conclude "$status" "$approver" "$reason"
    fi
    ;;
  *) annotate warning "could not cancel $request_id (HTTP $http_code); it stays pending in Slack" ;;
esac
annotate error "no decision on \"$title\" within $timeout_text ($request_id)"
finish 4 timeout "" ""
