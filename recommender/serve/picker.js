// The photo picker's browser side (recommender/serve/picker.py): a file, a paste, a drop or a camera snapshot is decoded and
// scaled here, on the visitor's device, and only the scaled JPEG is sent, once. A phone's 12 MP photo (3-5 MB) goes
// as ~0.1-0.6 MB; the server never sees the original. Runs as gr.HTML's js_on_load: `element`, `props`, `trigger`
// and `upload` are Gradio's.
const SEND_SIDE = props.send_side;  // longest side of what is searched: the model sees 224 px, so 1,024 loses nothing
const WORK_SIDE = props.work_side;  // longest side kept for cropping: a crop of a quarter still has 1,024 px across
const QUALITY = props.quality;  // JPEG quality of what is sent
const SERVER_BYTES = props.server_bytes;  // a file the browser cannot draw (HEIC, TIFF) is sent whole up to this
const BROWSER_BYTES = props.browser_bytes;  // larger files are refused before the browser decodes them
const MEGABYTE = 1024 * 1024;

const $ = (selector) => element.querySelector(selector);
const picker = $(".picker"), fileInput = $("input[type=file]"), message = $(".message");
const stage = $(".stage"), canvas = $("canvas.photo"), frame = $(".frame");
const camera = $(".camera"), video = $("video");
let work = null;  // {canvas} the photo at <= WORK_SIDE, for the preview and crops; null when none is shown
let crop = null;  // {x, y, w, h} in work pixels while a frame is drawn
let stream = null;  // the camera's MediaStream while it is on

function say(text, kind = "info") {  // what the visitor reads, under the photo
  message.textContent = text;
  message.dataset.kind = kind;
}

function show(name) {  // "empty", "photo" or "camera"
  picker.dataset.state = name;
}

function fitted(width, height, side) {
  const scale = Math.min(1, side / Math.max(width, height));
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

function drawn(source, sx, sy, sw, sh, side) {  // a canvas holding the region, scaled to fit `side`
  const [width, height] = fitted(sw, sh, side);
  const out = document.createElement("canvas");
  out.width = width;
  out.height = height;
  const context = out.getContext("2d");
  context.fillStyle = "#fff";  // a transparent PNG is searched on white, as the catalog's photos are
  context.fillRect(0, 0, width, height);
  context.imageSmoothingQuality = "high";
  context.drawImage(source, sx, sy, sw, sh, 0, 0, width, height);
  return out;
}

function jpeg(source) {
  return new Promise((resolve, reject) => source.toBlob(
    (blob) => (blob ? resolve(blob) : reject(new Error("the browser could not encode the photo"))),
    "image/jpeg", QUALITY));
}

async function send(blob, name, details, after) {  // upload the bytes, then have the page search them
  say("Searching…", "busy");
  let uploaded;
  try {
    uploaded = await upload(new File([blob], name, {type: blob.type || "application/octet-stream"}));
  } catch (error) {
    uploaded = null;
  }
  if (!uploaded || !uploaded.path) {
    const reason = navigator.onLine === false ? "this device is offline" : "the server could not be reached";
    say(`The photo was not sent: ${reason}. Check the connection and try again.`, "error");
    return;
  }
  trigger("input", {path: uploaded.path, bytes: blob.size, ...details});
  say(after, "info");
}
const CROP_HINT = "Drag on the photo to frame a garment and search only that part.";

async function searchWhole(source) {
  const out = drawn(work, 0, 0, work.width, work.height, SEND_SIDE);
  await send(await jpeg(out), "photo.jpg", {source, width: out.width, height: out.height, crop: null}, CROP_HINT);
}

async function takeFile(file, source) {
  stopCamera();
  if (!file) return;
  if (file.size > BROWSER_BYTES) {
    say(`This file is ${(file.size / MEGABYTE).toFixed(0)} MB; photos up to ${BROWSER_BYTES / MEGABYTE} MB work.`,
      "error");
    return;
  }
  say("Reading the photo…", "busy");
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});  // EXIF orientation applied
  } catch (error) {
    bitmap = null;
  }
  if (!bitmap) {  // HEIC (Chrome, Firefox), TIFF, or not an image at all: the server reads it or says why not
    clearPhoto();
    if (file.size > SERVER_BYTES) {
      say(`This browser cannot read this file, and it is too large to send (${(file.size / MEGABYTE).toFixed(1)}` +
        ` MB, over ${SERVER_BYTES / MEGABYTE} MB). Send a JPEG, PNG or WebP photo.`, "error");
      return;
    }
    say("This browser cannot show this file; the server reads it…", "busy");
    await send(file, file.name || "photo", {source, width: null, height: null, crop: null, undrawn: true},
      "This browser cannot show this photo, so it is searched whole (no crop); the server read it.");
    return;
  }
  setWork(drawn(bitmap, 0, 0, bitmap.width, bitmap.height, WORK_SIDE));
  bitmap.close();
  await searchWhole(source);
}

function setWork(next) {
  work = next;
  crop = null;
  canvas.width = work.width;
  canvas.height = work.height;
  canvas.getContext("2d").drawImage(work, 0, 0);
  frame.hidden = true;
  show("photo");
}

function clearPhoto() {
  work = null;
  crop = null;
  frame.hidden = true;
  fileInput.value = "";
  show("empty");
}

// Choose, drop, paste.
fileInput.addEventListener("change", () => {
  const file = fileInput.files[0];
  fileInput.value = "";  // the same file chosen again (after a failure, say) is a change again
  takeFile(file, "upload");
});
$(".choose").addEventListener("click", () => fileInput.click());
picker.addEventListener("dragover", (event) => { event.preventDefault(); picker.classList.add("dragging"); });
picker.addEventListener("dragleave", () => picker.classList.remove("dragging"));
picker.addEventListener("drop", (event) => {
  event.preventDefault();
  picker.classList.remove("dragging");
  takeFile(event.dataTransfer.files[0], "drop");
});
document.addEventListener("paste", (event) => {  // Ctrl+V anywhere on the page, unless into a text field
  const target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
  const file = [...(event.clipboardData?.files || [])].find((item) => item.type.startsWith("image/"));
  if (file && element.offsetParent !== null) {
    event.preventDefault();
    takeFile(file, "paste");
  }
});
$(".paste").addEventListener("click", async () => {
  try {
    for (const item of await navigator.clipboard.read()) {
      const type = item.types.find((name) => name.startsWith("image/"));
      if (type) return takeFile(await item.getType(type), "paste");
    }
    say("There is no image on the clipboard: copy a photo first (or press Ctrl+V on the page).", "error");
  } catch (error) {
    say("The browser did not let the page read the clipboard: press Ctrl+V on the page instead.", "error");
  }
});
$(".remove").addEventListener("click", () => {
  clearPhoto();
  say("", "info");
  trigger("clear");
});

// The camera: its picture is taken as it is (never mirrored), the rear camera first on a phone.
async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    say("The camera needs a secure page (https, or localhost on your own machine). Choose a photo instead.", "error");
    return;
  }
  say("Starting the camera…", "busy");
  try {
    stream = await navigator.mediaDevices.getUserMedia(
      {video: {facingMode: {ideal: "environment"}, width: {ideal: 1920}, height: {ideal: 1080}}, audio: false});
  } catch (error) {
    const why = {NotAllowedError: "the camera was not allowed (the browser's site settings can allow it)",
      NotFoundError: "no camera was found", NotReadableError: "the camera is in use by another program"};
    say(`The camera did not start: ${why[error.name] || error.message}. Choose a photo instead.`, "error");
    return;
  }
  video.srcObject = stream;
  await video.play().catch(() => {});
  show("camera");
  say("Point the camera at a product, then take the photo.", "info");
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  video.srcObject = null;
  if (picker.dataset.state === "camera") show(work ? "photo" : "empty");
}

$(".camera-on").addEventListener("click", startCamera);
$(".camera-off").addEventListener("click", () => { stopCamera(); say("", "info"); });
$(".snap").addEventListener("click", async () => {
  if (!stream || video.readyState < 2) return say("The camera has no picture yet; wait a moment.", "error");
  const snapshot = drawn(video, 0, 0, video.videoWidth, video.videoHeight, WORK_SIDE);
  stopCamera();
  setWork(snapshot);
  await searchWhole("webcam");
});

// Crop: drag on the photo to frame a part of it; the frame's part of the kept copy is searched on release.
let anchor = null;
function workPoint(event) {
  const box = canvas.getBoundingClientRect();
  const x = Math.min(Math.max(event.clientX - box.left, 0), box.width) * (work.width / box.width);
  const y = Math.min(Math.max(event.clientY - box.top, 0), box.height) * (work.height / box.height);
  return [x, y];
}
function showFrame() {
  const scale = canvas.getBoundingClientRect().width / work.width;
  Object.assign(frame.style, {left: `${canvas.offsetLeft + crop.x * scale}px`,
    top: `${canvas.offsetTop + crop.y * scale}px`, width: `${crop.w * scale}px`, height: `${crop.h * scale}px`});
  frame.hidden = false;
}
canvas.addEventListener("pointerdown", (event) => {
  if (!work) return;
  anchor = workPoint(event);
  canvas.setPointerCapture(event.pointerId);
});
canvas.addEventListener("pointermove", (event) => {
  if (!anchor) return;
  const [x, y] = workPoint(event);
  crop = {x: Math.min(x, anchor[0]), y: Math.min(y, anchor[1]), w: Math.abs(x - anchor[0]), h: Math.abs(y - anchor[1])};
  showFrame();
});
canvas.addEventListener("pointerup", async () => {
  if (!anchor) return;
  anchor = null;
  const minimum = work.width / 40;  // a click or a slip is not a crop
  if (!crop || crop.w < minimum || crop.h < minimum) {
    crop = null;
    frame.hidden = true;
    return;
  }
  const region = [Math.round(crop.x), Math.round(crop.y), Math.round(crop.w), Math.round(crop.h)];
  const out = drawn(work, ...region, SEND_SIDE);
  const share = region.map((value, index) => value / (index % 2 ? work.height : work.width));
  await send(await jpeg(out), "crop.jpg", {source: "crop", width: out.width, height: out.height, crop: share},
    "The framed part is searched. Drag again to frame another part, or search the whole photo.");
});
$(".whole").addEventListener("click", async () => {
  if (!work) return;
  crop = null;
  frame.hidden = true;
  await searchWhole("upload");
});
show("empty");
