// gynlab: plotly figures no wider than their column.
// Written for this project (tools/docs.py copies it to site_libs/ and adds it, after plotly.min.js, to every page
// with a figure). A figure whose layout fixes a width keeps that width where its column is wide enough; where the
// column is narrower, the figure is drawn at the column's width (Plotly.newPlot is wrapped, so it is drawn once, at
// the right size), and it follows the column when the window is resized, never growing past its own width.
// Figures without a fixed width fill their column already (plotly's `responsive` config).
(() => {
  "use strict";
  const P = window.Plotly;
  if (!P || !P.newPlot || P.newPlot.gynlabFit) return;
  const column = (gd) => gd.closest(".cell-output-display") || gd.parentElement;
  const room = (gd) => { const box = column(gd); return box ? Math.floor(box.clientWidth) : 0; };
  const loosen = (gd) => {  // plotly's HTML gives the figure's wrapper the fixed width too
    const box = column(gd);
    if (gd.parentElement && gd.parentElement !== box) gd.parentElement.style.maxWidth = "100%";
  };

  const newPlot = P.newPlot;
  P.newPlot = function (gd, data, layout, ...rest) {
    try {
      const el = typeof gd === "string" ? document.getElementById(gd) : gd;
      const width = layout && Number(layout.width);
      if (el && width) {
        el.dataset.gynlabWidth = width;
        const fits = room(el);
        if (fits && width > fits) { loosen(el); layout = Object.assign({}, layout, { width: fits }); }
      }
    } catch (e) { /* draw it as it is */ }
    return newPlot.call(this, gd, data, layout, ...rest);
  };
  P.newPlot.gynlabFit = true;

  const refit = () => document.querySelectorAll(".plotly-graph-div[data-gynlab-width]").forEach((gd) => {
    if (!gd.layout) return;
    const width = Math.min(Number(gd.dataset.gynlabWidth), room(gd));
    if (width > 0 && width !== gd.layout.width) { loosen(gd); P.relayout(gd, { width }); }
  });
  let timer = null;
  window.addEventListener("resize", () => { clearTimeout(timer); timer = setTimeout(refit, 150); });
  window.addEventListener("load", refit);  // a figure drawn before the page had its final layout
})();
