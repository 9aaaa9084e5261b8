"""The Explore tab as a lesson in sub-tabs, one module each: start here (`start`), Xception at a
glance (`glance`), depthwise-separable convolutions (`separable`), live activations on the
visitor's photo (`activations`), the article's wiring against the paper's (`article`) and the
graph in Netron (`graph`). `tab` puts them in order and wires what they share (`context`); `api`
is the tab's public API (`/architecture`, `/activations`). The layout calls
`demo.ui.explore.tab.build_explore_tab`.

The work is `demo.services.explore.ExploreService`'s; figures are `demo.ui.figures`', words
`demo.ui.text`'s.
"""
