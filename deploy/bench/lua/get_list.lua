-- GET /heroes/?offset=0&limit=100 (a full page).
request = get_list
