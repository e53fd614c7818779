// MathJax for pymdownx.arithmatex (generic mode: pages and docstrings, which it turns into
// \(...\) and \[...\]) and for the notebooks' Markdown cells, written with $...$ and $$...$$.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  // The whole page: arithmatex's \(...\) and the notebooks' $...$; code and pre are skipped.
};

document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
