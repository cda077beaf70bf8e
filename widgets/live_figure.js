// Front-end of widgets.live_figure.LiveFigure: plotly's FigureWidget module, started
// without holding up anywidget.
//
// anywidget gives a model's module 2 s to import and initialise; if it takes longer, every
// later message to that model is dropped for good. plotly's module is 5 MB and often takes
// longer on a busy machine: the figure is then drawn empty and never updates. So this
// small module initialises at once, imports plotly's (held in the _plotly_esm trait) in
// the background and lets render wait for it.

// What plotly's model-side code listens to: messages it applies to its copy of the figure
// (_widget_data and _widget_layout), which the views are drawn from.
const PY2JS = [
  "_py2js_addTraces", "_py2js_deleteTraces", "_py2js_moveTraces", "_py2js_restyle",
  "_py2js_relayout", "_py2js_update", "_py2js_animate", "_py2js_removeLayoutProps",
  "_py2js_removeTraceProps",
];

async function importPlotly(source) {
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  try {
    const module = await import(url);
    // plotly >= 6.0.1 exports a function that makes one widget per model.
    return typeof module.default === "function" ? await module.default() : module.default;
  } finally {
    URL.revokeObjectURL(url);
  }
}

// Ask Python for the whole figure again; resolves once it has arrived.
function resync(model) {
  return new Promise((resolve) => {
    const arrived = () => {
      model.off("change:_synced", arrived);
      resolve();
    };
    model.on("change:_synced", arrived);
    model.send({ type: "resync" });
  });
}

export default () => {
  let started; // plotly's widget for this model, once it has initialised
  return {
    initialize({ model }) {
      // Not awaited: anywidget's deadline covers only this function.
      let missed = false;
      const early = () => {
        missed = true;
      };
      for (const name of PY2JS) model.on(`change:${name}`, early);
      started = importPlotly(model.get("_plotly_esm")).then(async (plotly) => {
        await plotly.initialize?.({ model });
        for (const name of PY2JS) model.off(`change:${name}`, early);
        // An update that came before plotly listened is missing from its copy.
        if (missed) await resync(model);
        return plotly;
      });
    },
    async render({ model, el }) {
      const plotly = await started;
      return plotly.render({ model, el });
    },
  };
};
