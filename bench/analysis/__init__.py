"""From run folders to figures: aggregation, intervals, comparisons, published claims, the regression gate."""
