// Pure helpers of the MOVA clip player: which output entry is the clip, its /view query and
// the caption. No DOM, so `node --test` can load it.

const VIDEO_EXTENSIONS = [".mp4", ".webm", ".mov", ".mkv"];

/** The first video file of a node's UI output ({images: [{filename, subfolder, type}], animated}). */
export function pickClip(output) {
  const entries = [...(output?.images ?? []), ...(output?.video ?? [])];
  const clip = entries.find((entry) => typeof entry?.filename === "string"
    && VIDEO_EXTENSIONS.some((ext) => entry.filename.toLowerCase().endsWith(ext)));
  return clip ? { filename: clip.filename, subfolder: clip.subfolder ?? "", type: clip.type ?? "output" } : null;
}

/** Query string of ComfyUI's `GET /view` for a clip. */
export function viewQuery(clip) {
  return new URLSearchParams({ filename: clip.filename, subfolder: clip.subfolder, type: clip.type }).toString();
}

/** Stable identity of a clip (to skip reloading the same file). */
export function clipKey(clip) {
  return clip ? `${clip.type}/${clip.subfolder}/${clip.filename}` : "";
}

/** "m:ss.s" for a duration in seconds; "" when unknown. */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  const tenths = Math.round(seconds * 10);
  const minutes = Math.floor(tenths / 600);
  const rest = (tenths - minutes * 600) / 10;
  return `${minutes}:${rest.toFixed(1).padStart(4, "0")}`;
}

/** Caption parts, e.g. ["640×352", "0:08.0", "with sound"]; unknown parts are left out. */
export function clipFacts({ width, height, duration, hasSound }) {
  const facts = [];
  if (width > 0 && height > 0) facts.push(`${width}×${height}`);
  const time = formatDuration(duration);
  if (time) facts.push(time);
  if (hasSound !== undefined) facts.push(hasSound ? "with sound" : "silent");
  return facts;
}
