// Loaded before require.js and embed-amd.js on pages with widgets (nb_ipywidgets_js in
// _config.yml); scripts/build-book copies it next to them into _static/widgets/.
// The widget bundles find their icon fonts relative to their requirejs module URLs, which
// default to the page's own folder: point every @jupyter-widgets module at this folder.
(function () {
  const here = document.currentScript.src.replace(/\/[^/]*$/, "");
  window.__jupyter_widgets_assets_path__ = here + "/";
  // a `require` object defined before require.js loads is its configuration
  window.require = {paths: {"@jupyter-widgets": here, "@jupyter-widgets/html-manager/dist": here}};
})();
