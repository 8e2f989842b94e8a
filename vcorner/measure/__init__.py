"""Clinical measurements from corners (heights, wedging, listhesis, angles), each with a 95% interval."""
