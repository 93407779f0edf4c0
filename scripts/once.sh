# Sourced by the scripts that build the embedded default's outputs step by step.
# once DIR INPUTS CMD...: run CMD unless DIR/.done holds this command and the checksum of INPUTS
# (files, ':'-separated; "-" for none) from a run that finished. DIR made by another command (a
# changed size) or from other inputs is deleted and made again; DIR without a stamp (a killed
# step) is left to CMD, which resumes
once() {
  local dir=$1 inputs=$2 key
  shift 2
  key="$*"
  [ "$inputs" = - ] || key="$key $(IFS=:; cat $inputs | md5sum)"
  if [ -f "$dir/.done" ]; then
    if [ "$(cat "$dir/.done")" = "$key" ]; then
      echo "[default] $dir: made by this command before, kept"
      return
    fi
    echo "[default] $dir: made by another command or from other inputs, made again"
    rm -rf "$dir"
  fi
  "$@"
  printf '%s' "$key" > "$dir/.done"
}
