// MOVA AV Mux / Save: a player for the saved clip, with its sound, under the node's widgets.
// It replaces the front end's generic (silent-looking, caption-less) video preview for this
// node only; if the player cannot be created, the generic preview stays in place.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

import { clipFacts, clipKey, pickClip, viewQuery } from "./lib/clip.js";
import { el, ensureStylesheet, forwardWheelToCanvas } from "./lib/comfy_dom.js";

const NODE_CLASS = "MOVAAVMux";
const PLAYER_WIDGET_NAME = "mova_clip_player";
const AUDIO_INPUT = "audio";
const PLAYER_MIN_HEIGHT = 220;
const PLACEHOLDER_TEXT = "Queue the workflow: the clip plays here, with its sound.";

/** The player of one MOVA AV Mux node. */
class ClipPlayer {
  constructor(node) {
    this.node = node;
    this.currentKey = "";
    this.aspect = 16 / 9;
    this.element = this.build();
  }

  build() {
    this.video = el("video.mova-player__video", { controls: true, playsinline: true, loop: true, preload: "auto" });
    this.video.hidden = true;
    this.placeholder = el("div.mova-player__placeholder", {},
      el("span.mova-player__icon", { "aria-hidden": "true", text: "▶" }),
      el("span", { text: PLACEHOLDER_TEXT }));
    const stage = el("div.mova-player__stage", {}, this.video, this.placeholder);
    this.name = el("span.mova-player__name");
    this.facts = el("span.mova-player__facts");
    this.download = el("a.mova-player__download", { text: "Download", title: "Download the mp4" });
    this.download.hidden = true;
    const caption = el("div.mova-player__caption", {}, this.name, this.facts, this.download);
    this.video.addEventListener("loadedmetadata", () => {
      if (this.video.videoWidth > 0) this.aspect = this.video.videoWidth / this.video.videoHeight;
      this.renderCaption();
      const size = this.node.computeSize?.();
      if (size) this.node.setSize([this.node.size[0], Math.max(this.node.size[1], size[1])]);
      this.node.setDirtyCanvas?.(true, true);
    });
    this.video.addEventListener("error", () => {
      this.facts.textContent = "could not load the clip";
    });
    const root = el("div.mova-player", { "data-node-class": NODE_CLASS }, stage, caption);
    forwardWheelToCanvas(app, stage);
    return root;
  }

  get hasSound() {
    return Boolean(this.node.inputs?.some((input) => input.name === AUDIO_INPUT && input.link != null));
  }

  /** Show the clip of a UI output ({images: [...], animated: [true]}); same file: nothing to do. */
  show(output) {
    const clip = pickClip(output);
    const key = clipKey(clip);
    if (!clip || key === this.currentKey) return;
    this.currentKey = key;
    const url = api.apiURL(`/view?${viewQuery(clip)}`);
    this.video.src = url;
    this.video.hidden = false;
    this.placeholder.hidden = true;
    this.download.href = url;
    this.download.setAttribute("download", clip.filename);
    this.download.hidden = false;
    this.name.textContent = clip.filename;
    this.name.title = clip.subfolder ? `${clip.subfolder}/${clip.filename}` : clip.filename;
    this.renderCaption();
  }

  renderCaption() {
    const { videoWidth, videoHeight, duration } = this.video;
    this.facts.textContent = clipFacts({
      width: videoWidth, height: videoHeight, duration, hasSound: this.currentKey ? this.hasSound : undefined,
    }).join(" · ");
  }

  /** Widget height for the node's current width: the clip's aspect ratio plus the caption. */
  preferredHeight(width) {
    return Math.max(PLAYER_MIN_HEIGHT, Math.round(width / this.aspect) + 34);
  }
}

function addClipPlayer(node) {
  if (typeof node.addDOMWidget !== "function") return;
  ensureStylesheet();
  const player = new ClipPlayer(node);
  const widget = node.addDOMWidget(PLAYER_WIDGET_NAME, "mova-clip-player", player.element, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => player.preferredHeight(Math.max(200, node.size[0] - 20)),
  });
  widget.serialize = false;
  node.movaClipPlayer = player;
  const size = node.computeSize?.();
  if (size) node.setSize([Math.max(node.size[0], 340), Math.max(node.size[1], size[1])]);
}

app.registerExtension({
  name: "mova.ClipPlayer",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_CLASS) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function onMovaExecuted(output) {
      onExecuted?.apply(this, arguments);
      this.movaClipPlayer?.show(output);
    };
    // The generic preview (drawn from onDrawBackground) would show the same clip a second time.
    const drawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function onMovaDrawBackground(...args) {
      if (!this.movaClipPlayer) return drawBackground?.apply(this, args);
      const restored = app.nodeOutputs?.[String(this.id)];
      if (restored) this.movaClipPlayer.show(restored); // outputs restored without an `executed` event
      return undefined;
    };
  },
  nodeCreated(node) {
    if (node.comfyClass === NODE_CLASS) addClipPlayer(node);
  },
});
