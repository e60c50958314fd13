// The dashboards' plotly.js: plotly's core and the trace types the pages and the configurable
// reports draw (customer_intel.dashboards.present.PLOTLY_TRACES, which tests keep equal to
// this list). Built by `make plotly-js` (plotly's documented modular build: lib/core plus
// Plotly.register) into lib/customer_intel/dashboards/voila/static/.
'use strict';
var Plotly = require('plotly.js/lib/core'); // core registers scatter

Plotly.register([
    require('plotly.js/lib/bar'),
    require('plotly.js/lib/barpolar'),
    require('plotly.js/lib/box'),
    require('plotly.js/lib/funnel'),
    require('plotly.js/lib/heatmap'),
    require('plotly.js/lib/histogram'),
    require('plotly.js/lib/treemap'),
]);

module.exports = Plotly;
