"""The class legend shows every class of a 20-class label space without scrolling (it was cut off at the bottom
of the window), and keeps a longer one within a bounded height (it scrolls)."""
from app.widgets.legend import MAX_HEIGHT, ClassLegend
from m2hmx.labels import load_label_space


def test_legend_shows_every_scannet_class_at_its_minimum_height(qtbot):
    legend = ClassLegend(load_label_space("scannet20"))
    qtbot.addWidget(legend)
    legend.resize(500, legend.minimumHeight())
    legend.show()
    qtbot.waitExposed(legend)
    assert legend.verticalScrollBar().maximum() == 0  # nothing below the visible area
    last = legend.entries[-1]
    assert last.mapTo(legend.widget(), last.rect().bottomLeft()).y() <= legend.viewport().height()


def test_long_legend_is_bounded(qtbot):
    short, long = ClassLegend(load_label_space("scannet20")), ClassLegend(load_label_space("nyu40"))
    qtbot.addWidget(short)
    qtbot.addWidget(long)
    assert short.minimumHeight() < long.minimumHeight() <= MAX_HEIGHT
