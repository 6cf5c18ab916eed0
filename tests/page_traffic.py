"""What a page sends: an init script that counts the bytes of every request body the page's scripts send (fetch and
XMLHttpRequest: Gradio's uploads and events), read back with sent_bytes(page)."""

# Counted in the page, before the request leaves: a FormData's files by their size, its fields by their UTF-8 length,
# plus 200 bytes a part for the multipart framing (an upper bound). Runs before Gradio's scripts load, so Gradio's
# client uses the counting fetch.
SENT_BYTES = """(() => {
  let total = 0;
  const size = (body) => {
    if (!body) return 0;
    if (typeof body === "string") return new TextEncoder().encode(body).length;
    if (body instanceof Blob) return body.size;
    if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return body.byteLength;
    if (body instanceof URLSearchParams) return body.toString().length;
    if (body instanceof FormData) {
      let bytes = 0;
      for (const [name, value] of body.entries()) bytes += 200 + name.length + size(value);
      return bytes;
    }
    return 0;
  };
  const fetch = window.fetch;
  window.fetch = function (input, init) {
    total += size(init && init.body);
    return fetch.apply(this, arguments);
  };
  const send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.send = function (body) { total += size(body); return send.apply(this, arguments); };
  window.__sentBytes = () => total;
})();"""


def sent_bytes(page) -> int:
    """The bytes of request bodies `page` has sent so far (SENT_BYTES must be its init script)."""
    return page.evaluate("window.__sentBytes()")
