"""prebuilder's demo pipeline: slugify a few titles and print them as a table."""
