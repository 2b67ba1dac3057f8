"""Names, places and price lists the simulated tenant draws from.

Phone numbers use the 555-0100 to 555-0199 block, which is reserved for
fiction, and e-mail addresses use example.com, so no generated contact
reaches a real person.
"""

from __future__ import annotations

# (city, state, zip prefix, area code, IANA time zone, latitude, longitude)
CITIES: tuple[tuple[str, str, str, str, str, float, float], ...] = (
    ("Dallas", "TX", "752", "214", "America/Chicago", 32.78, -96.80),
    ("Plano", "TX", "750", "972", "America/Chicago", 33.02, -96.70),
    ("Austin", "TX", "787", "512", "America/Chicago", 30.27, -97.74),
    ("Houston", "TX", "770", "713", "America/Chicago", 29.76, -95.37),
    ("Phoenix", "AZ", "850", "602", "America/Phoenix", 33.45, -112.07),
    ("Mesa", "AZ", "852", "480", "America/Phoenix", 33.42, -111.83),
    ("Denver", "CO", "802", "303", "America/Denver", 39.74, -104.99),
    ("Salt Lake City", "UT", "841", "801", "America/Denver", 40.76, -111.89),
    ("Sacramento", "CA", "958", "916", "America/Los_Angeles", 38.58, -121.49),
    ("San Diego", "CA", "921", "619", "America/Los_Angeles", 32.72, -117.16),
    ("Portland", "OR", "972", "503", "America/Los_Angeles", 45.52, -122.68),
    ("Atlanta", "GA", "303", "404", "America/New_York", 33.75, -84.39),
    ("Charlotte", "NC", "282", "704", "America/New_York", 35.23, -80.84),
    ("Tampa", "FL", "336", "813", "America/New_York", 27.95, -82.46),
    ("Orlando", "FL", "328", "407", "America/New_York", 28.54, -81.38),
    ("Columbus", "OH", "432", "614", "America/New_York", 39.96, -82.99),
    ("Nashville", "TN", "372", "615", "America/Chicago", 36.16, -86.78),
    ("Kansas City", "MO", "641", "816", "America/Chicago", 39.10, -94.58),
    ("Minneapolis", "MN", "554", "612", "America/Chicago", 44.98, -93.27),
    ("Anchorage", "AK", "995", "907", "America/Anchorage", 61.22, -149.90),
    ("Honolulu", "HI", "968", "808", "Pacific/Honolulu", 21.31, -157.86),
)

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
    "Sarah", "Carlos", "Karen", "Daniel", "Lisa", "Matthew", "Nancy", "Anthony", "Betty",
    "Mark", "Sandra", "Priya", "Ashley", "Steven", "Kimberly", "Andrew", "Emily", "Kenji",
    "Donna", "Joshua", "Michelle", "Kevin", "Carol", "Brian", "Amanda", "Luis", "Melissa",
    "Aaliyah", "Deborah", "Omar", "Stephanie", "Ryan", "Rebecca", "Wei", "Laura",
)

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
    "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White",
    "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young",
    "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
    "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Patel", "Kim",
)

COMPANY_WORDS: tuple[str, ...] = (
    "Lakeside", "Summit", "Pioneer", "Redwood", "Granite", "Harbor", "Meadow", "Sterling",
    "Cedar", "Ironwood", "Bluebonnet", "Keystone", "Northgate", "Riverbend", "Oakmont",
)
COMPANY_KINDS: tuple[str, ...] = (
    "Properties", "Dental Group", "Apartments", "Bakery", "Auto Repair", "Church",
    "Elementary School", "Fitness", "Medical Plaza", "Storage", "Office Park", "Diner",
)

STREET_NAMES: tuple[str, ...] = (
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Main",
    "Sunset", "Ridge", "Willow", "Highland", "Meadow", "Forest", "River", "Church",
    "Spring", "Lincoln", "Jackson", "Franklin", "Magnolia", "Mesquite", "Canyon",
)
STREET_KINDS: tuple[str, ...] = ("St", "Ave", "Dr", "Ln", "Ct", "Blvd", "Way", "Rd", "Pl", "Trl")

BUSINESS_UNITS: tuple[tuple[str, str], ...] = (
    ("HVAC Service", "HVAC"),
    ("HVAC Install", "HVAC"),
    ("Plumbing Service", "Plumbing"),
    ("Plumbing Install", "Plumbing"),
    ("Electrical Service", "Electrical"),
    ("Drains", "Plumbing"),
    ("Maintenance", "HVAC"),
    ("Commercial", "HVAC"),
)

JOB_TYPES: tuple[tuple[str, str, int, str], ...] = (
    # (name, priority, duration in seconds, class)
    ("No Cool", "High", 7200, "Service"),
    ("No Heat", "High", 7200, "Service"),
    ("AC Tune-Up", "Normal", 3600, "Maintenance"),
    ("Furnace Tune-Up", "Normal", 3600, "Maintenance"),
    ("Water Heater Repair", "High", 5400, "Service"),
    ("Water Heater Replacement", "Normal", 14400, "Install"),
    ("Drain Cleaning", "Normal", 3600, "Service"),
    ("Leak Repair", "Urgent", 5400, "Service"),
    ("Panel Upgrade", "Normal", 21600, "Install"),
    ("Outlet Repair", "Low", 3600, "Service"),
    ("System Replacement Estimate", "Normal", 5400, "Sales"),
    ("Membership Visit", "Low", 3600, "Maintenance"),
    ("Warranty Callback", "High", 3600, "Service"),
    ("Duct Cleaning", "Low", 10800, "Service"),
)

CAMPAIGNS: tuple[tuple[str, str, str], ...] = (
    # (name, category, medium)
    ("Google Ads", "Paid Search", "Online"),
    ("Google Local Services", "Paid Search", "Online"),
    ("Facebook", "Social", "Online"),
    ("Yelp", "Reviews", "Online"),
    ("Website", "Organic", "Online"),
    ("Referral", "Word of Mouth", "Referral"),
    ("Repeat Customer", "Word of Mouth", "Referral"),
    ("Truck Wrap", "Offline", "Vehicle"),
    ("Direct Mail Spring", "Offline", "Mail"),
    ("Radio", "Offline", "Broadcast"),
    ("Home Show", "Events", "Event"),
    ("Membership Renewal", "Retention", "Mail"),
)

TAG_TYPES: tuple[tuple[str, str, str | None], ...] = (
    # (name, color, importance)
    ("VIP", "#D4AF37", "High"),
    ("Member", "#2E86C1", "Medium"),
    ("Do Not Service", "#C0392B", "High"),
    ("Pets on Site", "#27AE60", None),
    ("Gate Code", "#7F8C8D", None),
    ("Senior Discount", "#8E44AD", "Medium"),
    ("Warranty", "#E67E22", "Medium"),
    ("New Construction", "#16A085", None),
    ("Commercial Account", "#34495E", "High"),
    ("Spanish Speaking", "#F39C12", None),
)

EMPLOYEE_ROLES: tuple[str, ...] = (
    "Owner", "Admin", "CSR", "CSR", "CSR", "Dispatch", "Dispatch", "Accounting",
    "SalesManager", "FieldManager", "GeneralOffice", "CSR", "Accounting", "Dispatch", "CSR",
)

# (name, type, unit rate)
SKUS: tuple[tuple[str, str, float], ...] = (
    ("Diagnostic Fee", "Service", 89.0),
    ("Refrigerant R-410A per lb", "Material", 95.0),
    ("Capacitor Replacement", "Service", 245.0),
    ("Condenser Fan Motor", "Material", 420.0),
    ("16 SEER Heat Pump System", "Equipment", 8950.0),
    ("Furnace 80% 60k BTU", "Equipment", 3850.0),
    ("Tankless Water Heater", "Equipment", 3400.0),
    ("50 Gal Water Heater", "Equipment", 1650.0),
    ("Drain Snake Main Line", "Service", 275.0),
    ("Hydro Jetting", "Service", 650.0),
    ("200A Panel Upgrade", "Service", 2850.0),
    ("GFCI Outlet", "Material", 145.0),
    ("Surge Protector", "Material", 385.0),
    ("Thermostat Smart", "Material", 325.0),
    ("Labor Hour", "Service", 135.0),
    ("Membership Discount", "PriceModifier", -25.0),
)

PAYMENT_TYPES: tuple[tuple[str, str], ...] = (
    ("Credit Card", "61"),
    ("Check", "62"),
    ("Cash", "63"),
    ("ACH", "64"),
    ("Financing", "65"),
)

MEMBERSHIP_TYPES: tuple[tuple[int, str, str, float], ...] = (
    # (id, name, billing frequency, price)
    (7001, "Comfort Club", "Monthly", 14.95),
    (7002, "Comfort Club Annual", "Annual", 179.0),
    (7003, "Plumbing Protection", "Quarterly", 45.0),
    (7004, "Whole Home Plan", "Monthly", 29.95),
)

JOB_SUMMARIES: tuple[str, ...] = (
    "<p>Customer reports the upstairs unit is blowing warm air.</p>",
    "<p>Annual maintenance visit. Check filters and refrigerant.</p>",
    "<p>Water heater leaking from the bottom of the tank.</p>",
    "<p>Kitchen sink drains slowly, customer tried a plunger.</p>",
    "<p>Breaker trips when the microwave runs.</p>",
    "<p>Furnace makes a loud noise at start-up.</p>",
    "<p>Quote a full system replacement; unit is 18 years old.</p>",
    "<p>Follow-up on last week's repair, still not cooling.</p>",
)

SPECIAL_INSTRUCTIONS: tuple[str, ...] = (
    "Call 30 minutes before arrival.",
    "Dog in the back yard; use the side gate.",
    "Gate code 1234.",
    "Park on the street, driveway is being resurfaced.",
    "Customer works from home; ring the bell once.",
)
