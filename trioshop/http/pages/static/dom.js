// What both pages build their elements with: el(tag, props, ...children). No framework.
"use strict";

window.trioshopDom = {
  // A new element: props set as properties, except "class", "text" (its text), and the
  // attributes data-*, aria-*, role and for; null and undefined children skipped.
  el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "for") {
        node.setAttribute(key, value);
      } else node[key] = value;
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  },
};
