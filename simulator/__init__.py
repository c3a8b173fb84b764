"""City simulator: fleet, behaviour, labelled incidents and decoys, publisher."""
