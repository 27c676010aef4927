// Box editor for the labeling page's detection task: draw, pick the class by key, move, resize,
// relabel, delete and undo boxes with a mouse, a pen or a finger, and accept or fix the model's
// boxes shown as suggestions (model-assisted labeling).
//
// Boxes live in the image's own pixels, [x, y, w, h] as the label JSON takes them; the drawing
// is an SVG over the image whose viewBox is the image's natural size, so the browser maps screen
// points to image pixels (getScreenCTM) at any zoom and on any screen. Pointer events cover mouse,
// pen and touch alike; `touch-action: none` keeps a finger's drag from scrolling the page.
//
//   const editor = new BoxEditor(element, {classes: ["cat", "dog"], onChange: boxes => ...});
//   await editor.load(url, [{bbox: [10, 10, 40, 30], label: 1, score: 0.62}]);
//   editor.value();  // [{bbox: [x, y, w, h], label}], [] for "nothing here"
//
// Keys (handleKey, which the page calls with its keydown events): 0-9 pick the class of the
// next box, or relabel the selected one; Delete or Backspace remove the selected box; Escape
// deselects; "a" accepts every suggestion; Ctrl+Z or "z" undoes the last change.
(function (global) {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2457d6", "#d6452f", "#1d9a5b", "#b8860b", "#8e44ad",
                   "#0b8a9a", "#c2185b", "#5d6d7e", "#e67e22", "#34495e"];
  const MIN_SIDE_PX = 6; // on screen: a shorter drag is a tap, not a box

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  function round2(v) { return Math.round(v * 100) / 100; }

  class BoxEditor {
    constructor(root, options) {
      this.root = root;
      this.classes = (options && options.classes) || [];
      this.onChange = (options && options.onChange) || (() => {});
      this.boxes = [];        // {x, y, w, h, label} in image pixels
      this.suggestions = [];  // {x, y, w, h, label, score}, not part of the value until accepted
      this.history = [];      // snapshots of boxes before each change
      this.selected = -1;
      this.current = 0;       // class of the next box drawn
      this.size = {w: 1, h: 1};
      this.drag = null;
      root.classList.add("box-editor");
      root.style.position = "relative";
      this.img = document.createElement("img");
      this.img.alt = "image to box";
      this.img.style.cssText = "display:block;width:100%;height:auto;user-select:none";
      this.img.draggable = false;
      root.appendChild(this.img);
      this.svg = el("svg", {preserveAspectRatio: "none", role: "application",
                            "aria-label": "draw boxes"}, root);
      this.svg.style.cssText = "position:absolute;inset:0;width:100%;height:100%;" +
                               "touch-action:none;cursor:crosshair";
      this.svg.addEventListener("pointerdown", e => this._down(e));
      this.svg.addEventListener("pointermove", e => this._move(e));
      this.svg.addEventListener("pointerup", e => this._up(e));
      this.svg.addEventListener("pointercancel", () => { this.drag = null; this.render(); });
    }

    /** Show the image at `url` with `suggestions` ({bbox, label, score}); forget the old boxes. */
    load(url, suggestions) {
      return new Promise((resolve, reject) => {
        this.img.onload = () => {
          this.size = {w: this.img.naturalWidth, h: this.img.naturalHeight};
          this.svg.setAttribute("viewBox", `0 0 ${this.size.w} ${this.size.h}`);
          this.boxes = [];
          this.history = [];
          this.selected = -1;
          this.suggestions = (suggestions || []).map(s => ({
            x: s.bbox[0], y: s.bbox[1], w: s.bbox[2], h: s.bbox[3],
            label: this._classIndex(s.label), score: s.score}));
          this.render();
          resolve(this);
        };
        this.img.onerror = () => reject(new Error(`cannot load ${url}`));
        this.img.src = url;
      });
    }

    /** The label's boxes: [{bbox: [x, y, w, h], label}] in image pixels; [] for none. */
    value() {
      return this.boxes.map(b => ({bbox: [b.x, b.y, b.w, b.h].map(round2), label: b.label}));
    }

    setClass(index) {
      if (index < 0 || (this.classes.length && index >= this.classes.length)) return false;
      if (this.selected >= 0) {
        this._change(() => { this.boxes[this.selected].label = index; });
      }
      this.current = index;
      this.render();
      return true;
    }

    acceptSuggestion(i) {
      const s = this.suggestions[i];
      if (!s) return;
      this._change(() => {
        this.suggestions.splice(i, 1);
        this.boxes.push({x: s.x, y: s.y, w: s.w, h: s.h, label: s.label});
        this.selected = this.boxes.length - 1;
      });
    }

    acceptAll() {
      if (!this.suggestions.length) return;
      this._change(() => {
        for (const s of this.suggestions) this.boxes.push({x: s.x, y: s.y, w: s.w, h: s.h,
                                                           label: s.label});
        this.suggestions = [];
        this.selected = -1;
      });
    }

    remove(i) {
      if (!this.boxes[i]) return;
      this._change(() => { this.boxes.splice(i, 1); this.selected = -1; });
    }

    undo() {
      const last = this.history.pop();
      if (!last) return false;
      this.boxes = last.boxes;
      this.suggestions = last.suggestions;
      this.selected = -1;
      this.render();
      this.onChange(this.value());
      return true;
    }

    /** Handle a keydown event; true when it was the editor's (the page then does nothing). */
    handleKey(e) {
      if (e.ctrlKey || e.metaKey) {
        if (e.key === "z") { this.undo(); return true; }
        return false;
      }
      if (/^[0-9]$/.test(e.key)) return this.setClass(Number(e.key));
      if ((e.key === "Delete" || e.key === "Backspace") && this.selected >= 0) {
        this.remove(this.selected);
        return true;
      }
      if (e.key === "Escape" && this.selected >= 0) { this.selected = -1; this.render(); return true; }
      if (e.key === "a") { this.acceptAll(); return true; }
      if (e.key === "z") { this.undo(); return true; }
      return false;
    }

    _classIndex(label) {
      if (typeof label === "number") return label;
      const i = this.classes.indexOf(String(label));
      return i >= 0 ? i : 0;
    }

    _change(apply) {
      this.history.push({boxes: this.boxes.map(b => ({...b})),
                         suggestions: this.suggestions.map(s => ({...s}))});
      apply();
      this.render();
      this.onChange(this.value());
    }

    _point(e) {
      const pt = this.svg.createSVGPoint();
      pt.x = e.clientX;
      pt.y = e.clientY;
      const p = pt.matrixTransform(this.svg.getScreenCTM().inverse());
      return {x: Math.min(Math.max(p.x, 0), this.size.w), y: Math.min(Math.max(p.y, 0), this.size.h)};
    }

    _pixelsPerUnit() {
      const rect = this.svg.getBoundingClientRect();
      return rect.width / this.size.w || 1;
    }

    _down(e) {
      if (e.button !== undefined && e.button > 0) return;
      e.preventDefault();
      this.svg.setPointerCapture(e.pointerId);
      const p = this._point(e);
      const target = e.target.dataset || {};
      if (target.suggestion !== undefined) {
        this.acceptSuggestion(Number(target.suggestion));
        return;
      }
      if (target.handle !== undefined && this.selected >= 0) {
        this.drag = {mode: "resize", corner: target.handle, start: p,
                     before: {...this.boxes[this.selected]}};
      } else if (target.box !== undefined) {
        this.selected = Number(target.box);
        this.drag = {mode: "move", start: p, before: {...this.boxes[this.selected]}};
      } else {
        this.selected = -1;
        this.drag = {mode: "draw", start: p, now: p};
      }
      this.render();
    }

    _move(e) {
      if (!this.drag) return;
      const p = this._point(e);
      const d = this.drag;
      d.now = p;
      if (d.mode === "move") {
        const b = this.boxes[this.selected];
        b.x = Math.min(Math.max(d.before.x + p.x - d.start.x, 0), this.size.w - b.w);
        b.y = Math.min(Math.max(d.before.y + p.y - d.start.y, 0), this.size.h - b.h);
      } else if (d.mode === "resize") {
        const b = this.boxes[this.selected];
        const o = d.before;
        const left = d.corner.includes("w") ? p.x : o.x;
        const right = d.corner.includes("e") ? p.x : o.x + o.w;
        const top = d.corner.includes("n") ? p.y : o.y;
        const bottom = d.corner.includes("s") ? p.y : o.y + o.h;
        Object.assign(b, {x: Math.min(left, right), y: Math.min(top, bottom),
                          w: Math.abs(right - left), h: Math.abs(bottom - top)});
      }
      this.render();
    }

    _up(e) {
      const d = this.drag;
      this.drag = null;
      if (!d) return;
      const p = this._point(e);
      const minSide = MIN_SIDE_PX / this._pixelsPerUnit();
      if (d.mode === "draw") {
        const box = {x: Math.min(d.start.x, p.x), y: Math.min(d.start.y, p.y),
                     w: Math.abs(p.x - d.start.x), h: Math.abs(p.y - d.start.y),
                     label: this.current};
        if (box.w >= minSide && box.h >= minSide) {
          this._change(() => { this.boxes.push(box); this.selected = this.boxes.length - 1; });
          return;
        }
      } else {
        const b = this.boxes[this.selected];
        const now = {...b};
        Object.assign(b, d.before);  // recorded as one change, from where the drag began
        const moved = ["x", "y", "w", "h"].some(k => Math.abs(now[k] - d.before[k]) > 1e-9);
        if (moved && now.w >= minSide && now.h >= minSide) {
          this._change(() => Object.assign(this.boxes[this.selected], now));
          return;
        }
      }
      this.render();
    }

    render() {
      const svg = this.svg;
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      const unit = 1 / this._pixelsPerUnit();  // one screen pixel in image pixels
      const name = i => this.classes[i] !== undefined ? this.classes[i] : String(i);
      this.suggestions.forEach((s, i) => {
        const g = el("g", {class: "suggestion"}, svg);
        el("rect", {x: s.x, y: s.y, width: s.w, height: s.h, fill: "rgba(255,255,255,0.08)",
                    stroke: PALETTE[s.label % PALETTE.length], "stroke-width": 2 * unit,
                    "stroke-dasharray": `${6 * unit} ${4 * unit}`,
                    "data-suggestion": i, style: "cursor:pointer"}, g);
        const t = el("text", {x: s.x + 2 * unit, y: s.y + 12 * unit, "font-size": 11 * unit,
                              fill: PALETTE[s.label % PALETTE.length], "pointer-events": "none"}, g);
        t.textContent = `${name(s.label)}? ${s.score !== undefined ? s.score.toFixed(2) : ""}`;
      });
      this.boxes.forEach((b, i) => {
        const color = PALETTE[b.label % PALETTE.length];
        const chosen = i === this.selected;
        const g = el("g", {class: chosen ? "box selected" : "box"}, svg);
        el("rect", {x: b.x, y: b.y, width: b.w, height: b.h, fill: "rgba(0,0,0,0.001)",
                    stroke: color, "stroke-width": (chosen ? 3 : 2) * unit, "data-box": i,
                    style: "cursor:move"}, g);
        const t = el("text", {x: b.x + 2 * unit, y: b.y - 3 * unit, "font-size": 12 * unit,
                              fill: color, "pointer-events": "none"}, g);
        t.textContent = name(b.label);
        if (chosen) {
          for (const corner of ["nw", "ne", "sw", "se"]) {
            const cx = corner.includes("w") ? b.x : b.x + b.w;
            const cy = corner.includes("n") ? b.y : b.y + b.h;
            el("circle", {cx, cy, r: 9 * unit, fill: "#fff", stroke: color,
                          "stroke-width": 2 * unit, "data-handle": corner,
                          style: "cursor:nwse-resize"}, g);
          }
        }
      });
      const d = this.drag;
      if (d && d.mode === "draw" && d.now) {
        el("rect", {x: Math.min(d.start.x, d.now.x), y: Math.min(d.start.y, d.now.y),
                    width: Math.abs(d.now.x - d.start.x), height: Math.abs(d.now.y - d.start.y),
                    fill: "none", stroke: PALETTE[this.current % PALETTE.length],
                    "stroke-width": 2 * unit, class: "drawing"}, svg);
      }
      this.root.dataset.boxes = String(this.boxes.length);
      this.root.dataset.suggestions = String(this.suggestions.length);
    }
  }

  global.BoxEditor = BoxEditor;
})(typeof window !== "undefined" ? window : globalThis);
