// The management API's docs page: operations read from openapi.json, requests sent with the
// key typed in. Everything from the document or a reply is put into the page as text.
"use strict";

(() => {
  const KEY_NAME = "dify-gateway-console-key"; // the console's: one sign-in serves both
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function schemaOf(param) {
    const schema = param.schema || {};
    return (schema.anyOf || [schema]).find((s) => s.type !== "null") || schema;
  }

  function input(param) {
    const schema = schemaOf(param);
    const id = `p-${Math.random().toString(36).slice(2)}`;
    const control = schema.enum
      ? el("select", { id }, ...schema.enum.map((v) => el("option", { value: v, text: v })))
      : el("input", { id, placeholder: schema.default === undefined ? "" : String(schema.default), spellcheck: "false" });
    if (schema.enum && schema.default !== undefined) control.value = schema.default;
    control.dataset.name = param.name;
    return [el("label", { for: id, text: param.name }), control,
      param.description ? el("small", { text: param.description }) : null];
  }

  function operation(path, method, op) {
    const params = (op.parameters || []).filter((p) => p.in === "query");
    const output = el("pre", { hidden: true });
    const form = el("form", { class: "params" }, ...params.flatMap(input));
    const send = el("button", { type: "submit", text: "Send" });
    form.append(el("span"), el("div", {}, send));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const query = new URLSearchParams();
      for (const control of form.querySelectorAll("[data-name]")) {
        if (control.value !== "") query.set(control.dataset.name, control.value);
      }
      const url = `.${path}${query.toString() ? `?${query}` : ""}`;
      sessionStorage.setItem(KEY_NAME, $("key").value);
      output.hidden = false;
      output.textContent = `GET ${url.slice(1)} …`;
      try {
        const response = await fetch(url, { headers: { "X-Admin-Key": $("key").value }, cache: "no-store" });
        const text = await response.text();
        let shown = text;
        try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON: as it came */ }
        output.textContent = `HTTP ${response.status}\n${shown}`;
      } catch (error) {
        output.textContent = `failed: ${error.message}`;
      }
    });
    return el("section", { class: "op" },
      el("h2", {}, el("span", { class: "method", text: method.toUpperCase() }), `/admin${path}`),
      op.summary ? el("p", { text: op.summary }) : null, form, output);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    $("key").value = sessionStorage.getItem(KEY_NAME) || "";
    try {
      const response = await fetch("openapi.json", { cache: "no-store" });
      const doc = await response.json();
      $("title").textContent = `${doc.info.title} ${doc.info.version}`;
      $("description").textContent = doc.info.description || "";
      const sections = [];
      for (const [path, methods] of Object.entries(doc.paths)) {
        for (const [method, op] of Object.entries(methods)) sections.push(operation(path, method, op));
      }
      $("operations").replaceChildren(...sections);
      document.documentElement.dataset.docsRendered = "true";
    } catch (error) {
      $("load-error").textContent = `Cannot load openapi.json: ${error.message}`;
    }
  });
})();
